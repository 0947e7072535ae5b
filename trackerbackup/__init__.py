"""trackerbackup: consistent, verified backups of a Torrust Tracker host."""

__version__ = "0.1.0"
