"""Sphinx servers that answer right but misbehave as students' servers do, for grade's tests.

    python3 tests/misbehaving_server.py KIND HOST PORT MARKER

MARKER is only carried in the command line, which every forked process keeps: a test finds what
is left of a submission by it. KIND:

    well                 one client at a time, SIGTERM ends it with exit 0 (run through sh -c)
    fork-per-connection  a child per client, which ignores SIGTERM and outlives its client
    daemonizes           listens, then double fork and setsid: the process grade started exits 0
    ignores-sigterm      ignores SIGTERM and forks a helper that ignores it too
    forks-40-groups      forks 40 sleeping children, each in a process group of its own
    floods-stderr        writes 50 MB to stderr while it serves
    grows-memory         keeps 32 MiB more for every recv (the `buf += data` bug, made large)
    fork-chain           a helper that ignores SIGTERM forks and exits at once, its child likewise,
                         for 60 s: always one process, never the same
    forks-memory         forks 8 children that hold its listening socket and 40 MiB each
    unfinished-line      writes a warning to stderr without its newline, then serves
    stalls               reads questions and never answers them
    never-listens        forks a helper that ignores SIGTERM, then sleeps without listening
    exits-at-once        leaves a child holding its stderr and exits with status 3
"""
import os
import signal
import socket
import sys
import threading
import time

replies = [b'Yes.', b'Very likely.', b'Maybe.', b'Not likely.', b'No.']
kept = []  # grows-memory


def linger():
    """What a stray does: nothing, for longer than any grading."""
    while True:
        time.sleep(600)


def fork_stray(ignore_sigterm, own_group=False):
    if os.fork() == 0:
        if own_group:
            os.setpgid(0, 0)
        signal.signal(signal.SIGTERM, signal.SIG_IGN if ignore_sigterm else signal.SIG_DFL)
        linger()


def fork_chain():
    """A moving target: each generation forks the next and exits, for 60 s."""
    if os.fork() != 0:
        return
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        if os.fork() != 0:
            os._exit(0)
    os._exit(0)


def fork_memory():
    for _ in range(8):
        if os.fork() == 0:
            held = bytearray(40 << 20)
            for i in range(0, len(held), 4096):
                held[i] = 1
            linger()


def serve(sock, kind):
    """Answers each question of the connection, several per recv, until the client closes."""
    data = b''
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return
        if kind == 'grows-memory':
            kept.append(b'x' * (32 << 20))
        if kind == 'stalls':
            continue
        data += chunk
        while b'?' in data:
            question, data = data.split(b'?', 1)
            sock.sendall(question + b'? ' + replies[len(question) % 5])


def serve_safely(sock, kind):
    try:
        serve(sock, kind)
    except OSError:
        pass
    sock.close()


def main():
    kind, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(0))
    if kind == 'exits-at-once':
        fork_stray(ignore_sigterm=True)
        sys.exit(3)
    if kind == 'never-listens':
        fork_stray(ignore_sigterm=True)
        linger()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(64)
    if kind == 'daemonizes':
        if os.fork() > 0:
            os._exit(0)
        os.setsid()
        if os.fork() > 0:
            os._exit(0)
    if kind == 'ignores-sigterm':
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        fork_stray(ignore_sigterm=True)
    if kind == 'unfinished-line':
        os.write(2, b'Warning: no newline')
    if kind == 'fork-chain':
        fork_chain()
    if kind == 'forks-memory':
        fork_memory()
    if kind == 'forks-40-groups':
        for _ in range(40):
            fork_stray(ignore_sigterm=False, own_group=True)
    if kind == 'floods-stderr':
        def flood():
            line = b'x' * 1023 + b'\n'
            for _ in range(50 * 1024):
                os.write(2, line)
        threading.Thread(target=flood, daemon=True).start()
    while True:
        sock, _ = listener.accept()
        if kind == 'fork-per-connection':
            if os.fork() == 0:
                listener.close()
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                serve_safely(sock, kind)
                linger()
            sock.close()
        else:
            serve_safely(sock, kind)


if __name__ == '__main__':
    main()
