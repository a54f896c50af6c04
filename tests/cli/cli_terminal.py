"""Run a command in a pseudo-terminal and replay its output on a tiny terminal model (what a user sees).

The model knows what rich's live display sends: printable text with auto-wrap at the width, CR, LF,
cursor up/down (ESC[nA / ESC[nB), erase line (ESC[2K, ESC[K) and erase below (ESC[J); colours and
cursor visibility (other CSI sequences) are ignored. The screen keeps all lines (scroll-back).
"""

from __future__ import annotations

import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
import fcntl

_CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")
_OSC = re.compile(r"\x1b\][^\x07]*\x07")


def run_in_pty(args: list[str], env: dict[str, str], columns: int = 120, rows: int = 40, timeout: float = 600) -> tuple[int, str]:
    """Run `args` with stdin/stdout/stderr on a pty of the given size; return (exit code, raw output)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = dict(env, TERM="xterm-256color", COLUMNS=str(columns), LINES=str(rows))
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the pty
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    else:
        proc.kill()
    code = proc.wait()
    os.close(master)
    return code, b"".join(chunks).decode("utf-8", errors="replace")


def replay(raw: str, columns: int = 120) -> list[str]:
    """The lines a terminal `columns` wide shows after receiving `raw` (trailing spaces removed)."""
    raw = _OSC.sub("", raw)
    lines: list[list[str]] = [[]]
    row = col = 0
    pos = 0
    pending_wrap = False
    while pos < len(raw):
        ch = raw[pos]
        if ch == "\x1b":
            match = _CSI.match(raw, pos)
            if match is None:
                pos += 1
                continue
            pos = match.end()
            arg, cmd = match.groups()
            n = int(arg) if arg.isdigit() else 1
            pending_wrap = False
            if cmd == "A":
                row = max(0, row - n)
            elif cmd == "B":
                row += n
            elif cmd == "C":
                col = min(columns - 1, col + n)
            elif cmd == "D":
                col = max(0, col - n)
            elif cmd == "G":
                col = max(0, n - 1)
            elif cmd == "K":
                while len(lines) <= row:
                    lines.append([])
                if arg in ("2",):
                    lines[row] = []
                elif arg in ("", "0"):
                    del lines[row][col:]
            elif cmd == "J":
                del lines[row + 1 :]
                del lines[row][col:]
            continue
        pos += 1
        if ch == "\r":
            col = 0
            pending_wrap = False
        elif ch == "\n":
            row += 1
            pending_wrap = False
        elif ch in "\x07\x08\x00":
            continue
        else:
            if pending_wrap:
                row, col, pending_wrap = row + 1, 0, False
            while len(lines) <= row:
                lines.append([])
            line = lines[row]
            while len(line) < col:
                line.append(" ")
            if col < len(line):
                line[col] = ch
            else:
                line.append(ch)
            if col == columns - 1:
                pending_wrap = True  # xterm: the wrap happens at the next printable character
            else:
                col += 1
        while len(lines) <= row:
            lines.append([])
    return ["".join(line).rstrip() for line in lines]
