#!/usr/bin/env python3
"""Two measurements of server_epoll under a burst, for the figures in bench/README.md.

  bench/epoll_probes.py storm SERVER [--connects 3000] [--runs 5]
      A connected client's reply time while a connect storm waits in the backlog: the server is
      stopped (SIGSTOP) while N clients connect and the client sends its question, then
      continued; the time from SIGCONT to the reply. With --connects 0, the same without a storm.
  bench/epoll_probes.py burst SERVER [--clients 50]
      The server's memory after a burst: N clients flood questions without reading until the
      server stops reading them (back-pressure), then read every reply and go idle. Prints the
      server's RSS before, at the peak and once drained, per client.

SERVER is a server_epoll binary; it is started on a free port, on CPU 0, and stopped here. Run
the script on CPU 1: taskset -c 1 bench/epoll_probes.py ...
"""
import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import time


def start(server):
    # On CPU 0, as bench/run.sh places its servers; run this script on CPU 1 (taskset -c 1).
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") and os.cpu_count() >= 2 else []
    proc = subprocess.Popen(pin + [server, "127.0.0.1", "0", "--max-questions", "0"],
                            stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline().rsplit(":", 1)[1])
    # The log must be read, or the server blocks in its writes (docs/PROTOCOL.md).
    drain = subprocess.Popen(["cat"], stdin=proc.stdout, stdout=subprocess.DEVNULL)
    return proc, drain, port


def stop(proc, drain):
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    drain.wait()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def storm(server, connects):
    proc, drain, port = start(server)
    asker = socket.create_connection(("127.0.0.1", port))
    asker.sendall(b"Warm?")
    asker.recv(100)
    os.kill(proc.pid, signal.SIGSTOP)
    os.waitpid(proc.pid, os.WUNTRACED)
    storming = []
    for _ in range(connects):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        storming.append(sock)
    asker.sendall(b"Q?")
    start_time = time.perf_counter()
    os.kill(proc.pid, signal.SIGCONT)
    reply = asker.recv(100)
    elapsed = time.perf_counter() - start_time
    assert reply.startswith(b"Q? "), reply
    for sock in storming:
        sock.close()
    asker.close()
    stop(proc, drain)
    return elapsed * 1000


def burst(server, clients):
    proc, drain, port = start(server)
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(clients)]
    time.sleep(0.2)
    before = rss_kib(proc.pid)
    block = b"Will I be happy tomorrow?" * 4000
    for sock in socks:  # flood until the server stops reading (the send would block)
        sock.setblocking(False)
        while True:
            try:
                sock.send(block)
            except BlockingIOError:
                time.sleep(0.05)
                try:
                    sock.send(block)
                except BlockingIOError:
                    break
    time.sleep(0.5)
    peak = rss_kib(proc.pid)
    for sock in socks:  # read everything: the replies, until nothing comes for 0.3 s
        sock.setblocking(True)
        sock.settimeout(0.3)
        try:
            while sock.recv(1 << 20):
                pass
        except socket.timeout:
            pass
    time.sleep(0.5)
    drained = rss_kib(proc.pid)
    for sock in socks:
        sock.close()
    stop(proc, drain)
    print(f"RSS KiB: {before} before, {peak} at the peak, {drained} drained; "
          f"per client: {(peak - before) / clients:.1f} KiB at the peak, "
          f"{(drained - before) / clients:.1f} KiB drained")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("probe", choices=["storm", "burst"])
    parser.add_argument("server")
    parser.add_argument("--connects", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--clients", type=int, default=50)
    args = parser.parse_args()
    if args.probe == "storm":
        times = [storm(args.server, args.connects) for _ in range(args.runs)]
        print(f"reply after SIGCONT with {args.connects} connects queued: median "
              f"{statistics.median(times):.2f} ms (runs: "
              + ", ".join(f"{t:.2f}" for t in times) + ")")
    else:
        burst(args.server, args.clients)


if __name__ == "__main__":
    main()
