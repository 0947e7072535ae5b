"""A deployer-shaped storage tree (owners 1000 and 472, setgid dirs) for tests without Docker."""

from __future__ import annotations

import os
from pathlib import Path


def make_tree(compose: Path) -> None:
    storage = compose / "storage"
    etc = storage / "tracker" / "etc"
    etc.mkdir(parents=True)
    (etc / "tracker.toml").write_text("[http_api.access_tokens]\nadmin = 'secret'\n")
    os.symlink("tracker.toml", etc / "current.toml")
    for path in (storage / "tracker", etc, etc / "tracker.toml"):
        os.lchown(path, 1000, 1000)
    os.chmod(etc, 0o2770)
    os.chmod(storage / "tracker", 0o2770)
    os.utime(etc / "tracker.toml", (1_700_000_000.5, 1_700_000_000.5))
    certs = storage / "caddy" / "data" / "caddy" / "certificates"
    certs.mkdir(parents=True)
    (certs / "tracker.example.key").write_bytes(os.urandom(300))
    os.chmod(certs / "tracker.example.key", 0o600)
    (storage / "caddy" / "etc").mkdir(parents=True)
    (storage / "caddy" / "etc" / "Caddyfile").write_text("tracker.example { }\n")
    provisioning = storage / "grafana" / "provisioning" / "datasources"
    provisioning.mkdir(parents=True)
    (provisioning / "prometheus.yml").write_text("apiVersion: 1\n")
    for path in (storage / "grafana", storage / "grafana" / "provisioning", provisioning,
                 provisioning / "prometheus.yml"):
        os.chown(path, 472, 472)
    (storage / "prometheus" / "etc").mkdir(parents=True)
    (storage / "prometheus" / "etc" / "prometheus.yml").write_text("scrape_configs: []\n")
    (storage / "tracker" / "lib" / "database").mkdir(parents=True)
    (storage / "tracker" / "lib" / "database" / "tracker.db").write_bytes(b"not archived")
    (compose / "docker-compose.yml").write_text("services: {}\n")
    (compose / ".env").write_text("MYSQL_ROOT_PASSWORD=secret\n")
    os.chmod(compose / ".env", 0o640)
