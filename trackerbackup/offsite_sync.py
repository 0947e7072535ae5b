"""Off-site copies: push committed backups, catch up, prune, and fetch one back.

A push reads a committed, verified local backup and never changes it. An archive (the
selective and storage types) is staged as files with its manifest and pushed as one
snapshot (offsite_tree.py: restic then stores only the changed files). Any other
artifact's raw content (decompressed on the fly, never the `.zst`: restic's chunking
deduplicates what did not change and its own compression applies) is streamed into one
snapshot; the manifest follows in a snapshot of its own, last, so a backup counts as
off-site only once everything it needs is there (a killed push leaves data snapshots
without a manifest, which the next push of that backup forgets and redoes).

`sync` pushes every verified local backup newer than the newest one off-site (after an
outage, the next run catches up by itself); older ones are not pushed again, so an
off-site retention stricter than the local one does not fight it. `fetch` puts an
off-site backup into a private scratch directory in the local layout (raw artifacts,
an archive rebuilt byte for byte from its restored tree; each checked against the
manifest's raw sha256 and size), so verify and restore use the same two-sided source code
as for a local backup.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from trackerbackup import retention
from trackerbackup.config import Config
from trackerbackup.errors import TrackerBackupError, UsageError
from trackerbackup.extract_rules import split_name
from trackerbackup.log import Event, fields, get_logger
from trackerbackup.manifest import (
    MANIFEST,
    MAX_MANIFEST_BYTES,
    ArtifactRecord,
    Manifest,
    ManifestError,
    parse_manifest,
    read_manifest,
    write_manifest,
)
from trackerbackup.monitoring import write_offsite_textfile
from trackerbackup.offsite import (
    DATA,
    TREE,
    OffsiteBackup,
    OffsiteFailed,
    OffsiteStorageFull,
    Restic,
    group,
    push_tags,
    with_stale_locks_removed,
)
from trackerbackup.offsite_tree import is_archive, rebuild, staged, staging_dir
from trackerbackup.repository import FIX_BACKUP_DIR, Backup, Repository, parse_id
from trackerbackup.safefs import NotARegularFile, check_ancestors, private_dir, read_small_file
from trackerbackup.sources import StoredBackup
from trackerbackup.stream import SUFFIX, open_raw

log = get_logger()

SCRATCH_PREFIX = ".offsite-"


def raw_name(name: str, compression: str) -> str:
    """The artifact's name without its compression suffix: what a restore gets back."""
    suffix = SUFFIX.get(compression, "")
    return name.removesuffix(suffix) if suffix else name


def offsite_backups(restic: Restic, backup_type: str | None, host: str | None
                    ) -> list[OffsiteBackup]:
    """This host's (or, with host None, every host's) backups in the repository."""
    return group(restic.snapshots(host=host, backup_type=backup_type))


def pending(local: list[Backup], remote: list[OffsiteBackup]) -> list[Backup]:
    """Verified local backups newer than the newest complete one off-site, oldest first."""
    complete = [b.id for b in remote if b.complete]
    newest = max(complete, default="")
    return sorted((b for b in local if b.verified and b.id > newest), key=lambda b: b.id)


def sync(conf: Config, backup_type: str, restic: Restic | None = None) -> list[str]:
    """Push what the repository is missing of `backup_type`; the ids pushed. A failure
    is logged (its own MESSAGE_ID), recorded in the textfile and raised as OffsiteFailed;
    caller holds the type's lock."""
    try:
        restic = restic or Restic(conf)
        host = conf.offsite.host_name
        remote = with_stale_locks_removed(
            restic, lambda: offsite_backups(restic, backup_type, host))
        local = Repository(conf.general.backup_dir).backups(backup_type)
        pushed = []
        for backup in pending(local, remote):
            # A stale exclusive lock (a killed prune) refuses even a push: proven stale, it
            # goes, and the push starts again from the artifact's first byte.
            leftovers = [s.id for b in remote if b.id == backup.id for s in b.snapshots]
            with_stale_locks_removed(restic, partial(push, restic, backup, host, leftovers,
                                                     conf.general.backup_dir))
            pushed.append(backup.id)
    except (TrackerBackupError, OSError) as error:
        _record(conf, backup_type, ok=False)
        full = isinstance(error, OffsiteStorageFull)
        log.error("copying %s backups off-site failed: %s", backup_type, error,
                  extra=fields(Event.OFFSITE_STORAGE_FULL if full else
                               Event.OFFSITE_PUSH_FAILED, type=backup_type))
        if isinstance(error, TrackerBackupError):
            error.logged = True
        raise
    _record(conf, backup_type, ok=True)
    return pushed


def push(restic: Restic, backup: Backup, host: str, leftovers: list[str],
         backup_dir: Path) -> None:
    """One backup: an archive as its staged tree with the manifest, anything else as its
    artifacts' raw content, then its manifest (the commit marker)."""
    if leftovers:  # an interrupted push of this backup: its snapshots are incomplete
        restic.forget(leftovers, prune=False)
    manifest = read_manifest(backup.path)
    if is_archive(manifest):
        with staged(backup.path, manifest, staging_dir(backup_dir, backup.type)) as staging:
            restic.backup_tree(staging, host, push_tags(backup.type, backup.id, TREE))
        _pushed(backup, host)
        return
    for artifact in manifest.artifacts:
        with open_raw(backup.path / artifact.name, artifact.compression) as raw:
            restic.backup(raw, raw_name(artifact.name, artifact.compression), host,
                          push_tags(backup.type, backup.id, DATA))
    with open(backup.path / MANIFEST, "rb") as handle:
        restic.backup(handle, MANIFEST, host, push_tags(backup.type, backup.id, "manifest"))
    _pushed(backup, host)


def _pushed(backup: Backup, host: str) -> None:
    log.info("%s backup %s copied off-site", backup.type, backup.id,
             extra=fields(Event.OFFSITE_PUSHED, type=backup.type, id=backup.id, host=host))


def _record(conf: Config, backup_type: str, *, ok: bool) -> None:
    directory = conf.monitoring.textfile_dir
    if directory is None:
        return
    try:
        write_offsite_textfile(directory, backup_type, ok=ok, finished=datetime.now(UTC))
    except OSError as error:
        log.warning("cannot write the off-site metrics textfile in %s: %s", directory, error,
                    extra=fields(type=backup_type))


def prune(conf: Config, backup_type: str, *, dry_run: bool,
          restic: Restic | None = None) -> list[retention.Decision]:
    """The [offsite] keep_* rules over this host's backups of `backup_type` only; an
    incomplete push counts as unverified (deleted, never the floor). Caller holds the
    type's lock, so no push of this type on this host is running."""
    restic = restic or Restic(conf)
    host = conf.offsite.host_name
    remote = {b.id: b for b in offsite_backups(restic, backup_type, host) if b.host == host}
    refs = [retention.BackupRef(id=b.id, started=parse_id(b.id), verified=b.complete)
            for b in remote.values()]
    decisions = retention.decide(refs, datetime.now(UTC), conf.offsite.retention)
    doomed = [remote[d.backup.id] for d in decisions if not d.keep]
    if dry_run or not doomed:
        return decisions
    ids = [snap.id for backup in doomed for snap in backup.snapshots]
    with_stale_locks_removed(restic, lambda: restic.forget(ids, prune=True))
    for backup in doomed:
        log.info("forgot off-site %s backup %s of %s", backup_type, backup.id, host,
                 extra=fields(Event.OFFSITE_PRUNED, type=backup_type, id=backup.id, host=host))
    return decisions


def choose(remote: list[OffsiteBackup], backup_type: str, backup_id: str | None,
           host: str) -> OffsiteBackup:
    """The complete off-site backup `backup_id`, or the newest one."""
    complete = [b for b in remote if b.complete and b.type == backup_type]
    if backup_id is not None:
        complete = [b for b in complete if b.id == backup_id]
    if not complete:
        which = f"with id {backup_id}" if backup_id else "at all"
        raise UsageError(f"no complete off-site {backup_type} backup of host {host} {which}",
                         op="fetch from off-site",
                         hint="'trackerbackup offsite list --all-hosts' shows what there is")
    return max(complete, key=lambda b: b.id)


@contextmanager
def fetch(conf: Config, backup_type: str, backup_id: str | None,
          host: str | None = None) -> Iterator[StoredBackup]:
    """An off-site backup as a local one, in a private scratch directory under
    general.backup_dir, removed afterwards. Caller holds the type's lock."""
    restic = Restic(conf)
    host = host or conf.offsite.host_name
    chosen = choose(offsite_backups(restic, backup_type, host), backup_type, backup_id, host)
    root = Path(conf.general.backup_dir)
    check_ancestors(root, "general.backup_dir")  # a new VM may have none yet: made 0700
    private_dir(root, create=True, what="general.backup_dir", fix=FIX_BACKUP_DIR)
    for leftover in root.glob(f"{SCRATCH_PREFIX}{backup_type}-*"):
        shutil.rmtree(leftover, ignore_errors=True)  # a killed fetch; we hold the lock
    scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{backup_type}-", dir=root))
    try:
        yield _fetch_into(restic, chosen, scratch / chosen.id)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _fetch_into(restic: Restic, chosen: OffsiteBackup, directory: Path) -> StoredBackup:
    os.mkdir(directory, 0o700)
    assert chosen.manifest is not None
    if chosen.manifest.part == TREE:
        return _fetch_tree(restic, chosen, directory)
    text = bytearray()

    def collect(chunk: bytes) -> None:
        text.extend(chunk)
        if len(text) > MAX_MANIFEST_BYTES:  # never trust the repository's sizes
            raise ManifestError(f"the off-site manifest is larger than "
                                f"{MAX_MANIFEST_BYTES:,} bytes", op="fetch from off-site",
                                path=chosen.id)

    restic.dump(chosen.manifest.id, MANIFEST, collect)
    manifest = _parse(bytes(text), directory, chosen)
    artifacts = []
    data = {snap.paths[0].lstrip("/") if snap.paths else "": snap for snap in chosen.data}
    for artifact in manifest.artifacts:
        name = raw_name(artifact.name, artifact.compression)
        if name not in data:
            raise OffsiteFailed(f"the off-site backup has no snapshot of {name}",
                                op="fetch from off-site", path=chosen.id,
                                hint="restore another backup (--id)")
        _write_checked(directory / name, artifact.raw_size, artifact.raw_sha256,
                       partial(restic.dump, data[name].id, name))
        artifacts.append(_as_raw(artifact))
    return _stored(directory, replace(manifest, artifacts=tuple(artifacts)))


def _fetch_tree(restic: Restic, chosen: OffsiteBackup, directory: Path) -> StoredBackup:
    """`restic restore` of the staged tree next to `directory`, its archive rebuilt into
    `directory` and checked, the restored tree removed."""
    assert chosen.manifest is not None
    if len(chosen.manifest.paths) != 1:
        raise ManifestError(f"the off-site tree snapshot {chosen.manifest.id[:8]} has "
                            f"{len(chosen.manifest.paths)} paths, not one",
                            op="fetch from off-site", path=chosen.id)
    restored = directory.parent / "restored"
    restic.restore(chosen.manifest.id, restored)
    staging = restored.joinpath(*split_name(chosen.manifest.paths[0]))
    try:
        text = read_small_file(staging / MANIFEST, MAX_MANIFEST_BYTES)
    except (OSError, NotARegularFile) as error:
        raise ManifestError(f"the off-site snapshot has no readable manifest: {error}",
                            op="fetch from off-site", path=chosen.id) from error
    manifest = _parse(text, directory, chosen)
    if not is_archive(manifest):
        raise ManifestError(f"the off-site tree of {chosen.id} holds no archive backup",
                            op="fetch from off-site", path=chosen.id)
    [artifact] = manifest.artifacts
    name = raw_name(artifact.name, artifact.compression)
    _write_checked(directory / name, artifact.raw_size, artifact.raw_sha256,
                   lambda sink: rebuild(staging, artifact.name, sink))
    shutil.rmtree(restored)
    return _stored(directory, replace(manifest, artifacts=(_as_raw(artifact),)))


def _as_raw(artifact: ArtifactRecord) -> ArtifactRecord:
    return replace(artifact, name=raw_name(artifact.name, artifact.compression),
                   compression="none", size=artifact.raw_size, sha256=artifact.raw_sha256)


def _stored(directory: Path, manifest: Manifest) -> StoredBackup:
    write_manifest(directory, manifest)
    return StoredBackup(directory, manifest)


def _parse(text: bytes, directory: Path, chosen: OffsiteBackup) -> Manifest:
    try:
        manifest = parse_manifest(tomllib.loads(text.decode("utf-8")), directory / MANIFEST)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ManifestError(f"the off-site manifest is not TOML: {error}",
                            op="fetch from off-site", path=chosen.id) from error
    if (manifest.type, manifest.id) != (chosen.type, chosen.id):
        raise ManifestError(f"the off-site manifest is of {manifest.type} {manifest.id}, "
                            f"its tags say {chosen.type} {chosen.id}",
                            op="fetch from off-site", path=chosen.id)
    return manifest


def _write_checked(dest: Path, size: int, sha256: str,
                   produce: Callable[[Callable[[bytes], object]], object]) -> None:
    """What `produce` hands its sink, written to `dest` (new, 0600, fsynced): its size and
    sha256 must be the manifest's."""
    name = dest.name
    digest = hashlib.sha256()
    with open(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600),
              "wb") as out:
        def write(chunk: bytes) -> None:
            digest.update(chunk)
            out.write(chunk)

        produce(write)
        out.flush()
        os.fsync(out.fileno())
        written = out.tell()
    if written != size or digest.hexdigest() != sha256:
        raise OffsiteFailed(f"{name} fetched from off-site has {written:,} bytes, sha256 "
                            f"{digest.hexdigest()[:16]}..., the manifest says {size:,} and "
                            f"{sha256[:16]}...", op="fetch from off-site", path=dest.name,
                            hint="the off-site copy is damaged: run 'restic check "
                                 "--read-data', restore another backup (--id)")
