"""The SQLite store of record for keys and usage: WAL, a schema version, ordered migrations.

Every process (the server, `openrouter-proxy keys …`) opens the same file. WAL lets the
server read keys while a command writes one; `busy_timeout` makes a writer wait for
another's short transaction instead of failing. A file SQLite cannot use (corrupted,
read-only, a directory, a missing folder, locked by another process) is one
`DatabaseError` line naming the file.

An open connection keeps using its file after the file is deleted or replaced at its
path, so `OpenedFile` remembers which file (device, inode) was opened: comparing it with
what the path names now is how a running server notices (DESIGN §7).
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

BUSY_TIMEOUT_MS = 5_000

# Migration N (1-based) brings a database from schema N-1 to N. Released entries are
# never edited: a change is a new entry, so every older file can be brought up to date.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE keys (
            name TEXT PRIMARY KEY,
            hash TEXT NOT NULL UNIQUE,
            prefix TEXT NOT NULL,
            created REAL NOT NULL,
            revoked REAL,
            rpm INTEGER,
            rpd INTEGER,
            tpd INTEGER,
            concurrency INTEGER,
            models TEXT NOT NULL DEFAULT '[]',
            paid INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE usage (
            id INTEGER PRIMARY KEY,
            time REAL NOT NULL,
            key TEXT,
            route TEXT NOT NULL,
            requested_model TEXT,
            served_model TEXT,
            attempts INTEGER NOT NULL,
            status INTEGER NOT NULL,
            stream INTEGER NOT NULL,
            cache TEXT NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            cost REAL,
            latency_ms REAL NOT NULL,
            ttft_ms REAL
        )""",
        "CREATE INDEX usage_time ON usage (time)",
        "CREATE INDEX usage_key_time ON usage (key, time)",
    ),
    # A stream cut before its usage chunk is counted by what was relayed (DESIGN §7).
    ("ALTER TABLE usage ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0",),
)
SCHEMA_VERSION = len(MIGRATIONS)


class DatabaseError(Exception):
    """The database cannot be used; the message is one line naming the file and the fix."""


FileIdentity = tuple[int, int]  # (st_dev, st_ino)


def file_identity(path: Path) -> FileIdentity | None:
    """Which file `path` names now, or None when nothing is there."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


@dataclass(frozen=True, slots=True)
class OpenedFile:
    """The file a connection opened at `path`: a stat away from telling whether the path
    still names it. While the connection is open the inode cannot be reused, so a new file
    at the path always has another identity."""

    path: Path
    identity: FileIdentity | None

    def problem(self) -> str | None:
        """Why the path no longer names the opened file (deleted or replaced), or None."""
        now = file_identity(self.path)
        if now == self.identity:
            return None
        what = "deleted" if now is None else "replaced by another file"
        return f"database {self.path} was {what} while the server was using it"


def open_database(path: Path | str, *, create: bool = True) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the database; raise DatabaseError if unusable.

    With `create=False` only a database that already has the schema is opened (a running
    server reopening its path must not make an empty one, nor migrate a file another
    process is still creating). The connection is in autocommit mode
    (`isolation_level=None`): callers that write several rows say BEGIN/COMMIT themselves.
    `check_same_thread=False` lets the usage writer hand its connection to one worker
    thread at a time.
    """
    path = Path(path)
    if path.is_dir():
        raise DatabaseError(f"database {path} is a directory; set PROXY_DB_PATH to a file")
    if not path.parent.is_dir():
        raise DatabaseError(
            f"database {path}: folder {path.parent} does not exist; create it or change "
            "PROXY_DB_PATH"
        )
    if not create and not path.exists():
        raise DatabaseError(f"database {path} does not exist")
    try:
        connection = sqlite3.connect(
            path if create else f"{path.absolute().as_uri()}?mode=rw",
            isolation_level=None,
            check_same_thread=False,
            timeout=BUSY_TIMEOUT_MS / 1000,
            uri=not create,
        )
    except sqlite3.Error as exc:
        raise describe(path, exc) from None
    try:
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if not create and not int(connection.execute("PRAGMA user_version").fetchone()[0]):
            raise DatabaseError(f"database {path} has no schema yet")
        connection.execute("PRAGMA journal_mode = WAL")
        # WAL with synchronous=NORMAL: a commit survives a killed process (kill -9); only
        # a power loss may drop the last transactions, which is what usage can afford.
        connection.execute("PRAGMA synchronous = NORMAL")
        _migrate(connection, path)
    except sqlite3.Error as exc:
        connection.close()
        raise describe(path, exc) from None
    except DatabaseError:
        connection.close()
        raise
    return connection


def _migrate(connection: sqlite3.Connection, path: Path) -> None:
    """Apply the missing migrations in one transaction; the write also proves the file is
    writable, so a read-only database fails at start-up rather than at the first request."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = int(connection.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise DatabaseError(
                f"database {path} has schema version {version}, newer than this "
                f"openrouter-proxy knows ({SCHEMA_VERSION}); upgrade openrouter-proxy"
            )
        for number in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[number - 1]:
                connection.execute(statement)
        # Written even when already current: a read-only file fails here, not later.
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def describe(path: Path, exc: sqlite3.Error) -> DatabaseError:
    """One line for a SQLite failure: what is wrong with the file, and the fix."""
    reason = str(exc)
    name = getattr(exc, "sqlite_errorname", "")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "database is locked" in reason:
        return DatabaseError(
            f"database {path} is locked by another process ({reason}); try again when that "
            "process has finished"
        )
    if name == "SQLITE_NOTADB" or "not a database" in reason:
        return DatabaseError(
            f"database {path} is not an SQLite database or is corrupted ({reason}); "
            "move it away to start a new one, or point PROXY_DB_PATH elsewhere"
        )
    if name.startswith("SQLITE_READONLY") or not _writable(path):
        return DatabaseError(
            f"database {path} is read-only ({reason}); the proxy writes keys and usage "
            "there: make the file and its folder writable, or point PROXY_DB_PATH elsewhere"
        )
    if name.startswith("SQLITE_CORRUPT"):
        return DatabaseError(
            f"database {path} is corrupted ({reason}); restore a backup or move it away"
        )
    return DatabaseError(f"database {path} cannot be used: {reason}")


def _writable(path: Path) -> bool:
    """Can this process write the file (or create it, and its WAL files, in its folder)?
    `os.access` honours read-only mounts even for root."""
    folder_ok = os.access(path.parent, os.W_OK)
    return folder_ok and (not path.exists() or os.access(path, os.W_OK))


def write_problem(connection: sqlite3.Connection, path: Path) -> str | None:
    """Why the database cannot take a write now, or None (/readyz, DESIGN §11).

    A real write transaction on the server's own connection (it rewrites `user_version`
    with the value it reads, so a newer schema is never undone), then the file and folder
    checked as a new connection would meet them: open descriptors keep writing to a folder
    remounted read-only, yet the next process, or the next WAL file, could not.
    """
    try:
        connection.execute("BEGIN IMMEDIATE")
        try:
            version = int(connection.execute("PRAGMA user_version").fetchone()[0])
            connection.execute(f"PRAGMA user_version = {version}")
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        return str(describe(path, exc))
    if not _writable(path):
        return (
            f"database {path} is read-only (its file or folder cannot be written); the "
            "proxy writes keys and usage there: make both writable, or point PROXY_DB_PATH "
            "elsewhere"
        )
    return None
