"""Can the daemon use its state folder and journal file? Asked before anything starts.

Invariants:

* ``check`` never creates or changes anything: ``check-config`` runs it, as any user.
  A path that no user could use (the folder is a file, a parent is a file, the journal
  path is a folder) is an error. A permission the checking user lacks is an error when
  that user is root or owns the path; otherwise the daemon may run as another user
  (the systemd unit runs as ``edge-gateway`` and ``StateDirectory=`` creates the folder)
  and it is a note, not an error.
* ``prepare`` is what ``run`` does first: it creates the state folder, then treats every
  note as an error, since the user running it is the daemon's user. Every problem names
  the config key (``gateway.state_dir`` or ``journal.path``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from edge.config import Config, ConfigProblems


def check(cfg: Config) -> tuple[list[str], list[str]]:
    """(errors, notes) about ``gateway.state_dir`` and ``journal.path``."""
    errors: list[str] = []
    notes: list[str] = []
    state = cfg.state_dir
    _folder("gateway.state_dir", state, errors, notes)
    jkey = "journal.path" if cfg.journal.path else "journal.path (default <state_dir>/journal.db)"
    journal = cfg.journal_path
    st = _stat(journal)
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            errors.append(f"{jkey}: '{journal}' is a folder; give the journal's file name, "
                          f"e.g. '{journal / 'journal.db'}'")
        elif not stat.S_ISREG(st.st_mode):
            errors.append(f"{jkey}: '{journal}' exists and is not a regular file")
        elif not os.access(journal, os.R_OK | os.W_OK):
            _denied(jkey, journal, st, "is not writable", errors, notes)
    if journal.parent != state:
        _folder(jkey, journal.parent, errors, notes)
    return errors, notes


def prepare(cfg: Config) -> None:
    """Create the state folder; ConfigProblems listing every path the daemon cannot use."""
    try:
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        errors, _ = check(cfg)
        raise ConfigProblems(errors or [
            f"gateway.state_dir: cannot create '{cfg.state_dir}': {exc.strerror or exc}"
        ]) from None
    errors, notes = check(cfg)
    if errors or notes:
        raise ConfigProblems(errors + notes)


def _folder(key: str, folder: Path, errors: list[str], notes: list[str]) -> None:
    st = _stat(folder)
    if st is not None:
        if not stat.S_ISDIR(st.st_mode):
            errors.append(f"{key}: '{folder}' is not a folder")
        elif not os.access(folder, os.W_OK | os.X_OK):
            _denied(key, folder, st, "is not writable", errors, notes)
        return
    parent = folder.parent
    while (pst := _stat(parent)) is None and parent != parent.parent:
        parent = parent.parent
    if pst is None:
        return
    if not stat.S_ISDIR(pst.st_mode):
        errors.append(f"{key}: '{folder}' cannot be created: '{parent}' is a file, not a folder")
    elif not os.access(parent, os.W_OK | os.X_OK):
        _denied(key, folder, pst, f"does not exist and cannot be created in '{parent}'",
                errors, notes)


def _denied(key: str, path: Path, st: os.stat_result, what: str,
            errors: list[str], notes: list[str]) -> None:
    uid = os.geteuid()
    if uid in (0, st.st_uid):
        errors.append(f"{key}: '{path}' {what} by this user (uid {uid})")
    else:
        notes.append(f"{key}: '{path}' {what} by this user (uid {uid}); the daemon's user "
                     f"must be able to write there (systemd: StateDirectory= creates it)")


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:  # missing, a parent is a file, EACCES on a parent, ELOOP
        return None
