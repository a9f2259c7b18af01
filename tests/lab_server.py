"""The lab's simple server in Python, written from the lab's text, for grade's tests and docs.

Its recv_upto is the lab's: it returns the bytes up to the first '?' and keeps nothing after it,
so grade fails it on questions-in-one-packet and passes the rest.

    python3 tests/lab_server.py HOST PORT
"""
import random
import signal
import socket
import sys

replies = [b'Yes.', b'Very likely.', b'Maybe.', b'Not likely.', b'No.']


def get_address():
    return sys.argv[1], int(sys.argv[2])


def get_server_socket(address):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(address)
    listener.listen(64)
    return listener


def setup_connections(listener):
    while True:
        sock, address = listener.accept()
        print('Accepted connection from {}'.format(address), flush=True)
        process_connection(sock, address)


def process_connection(sock, address):
    try:
        while True:
            process_request(sock)
    except EOFError:
        print('Client socket to {} has closed'.format(address), flush=True)
    except Exception as e:
        print('Client {} error: {}'.format(address, e), flush=True)
    finally:
        sock.close()


def process_request(sock):
    question = recv_upto(sock, b'?')
    sock.sendall(make_reply(question))


def make_reply(question):
    return question + b' ' + random.choice(replies)


def recv_upto(sock, delimiter):
    data = sock.recv(4096)
    if not data:
        raise EOFError('socket closed')
    while delimiter not in data:
        more = sock.recv(4096)
        if not more:
            raise IOError('received {!r} then socket closed'.format(data))
        data += more
    return data[:data.index(delimiter) + 1]


if __name__ == '__main__':
    # Not in the lab: grade's clean-shutdown check wants exit status 0 on SIGTERM.
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(0))
    listener = get_server_socket(get_address())
    print('Listening for incoming connections at {}'.format(listener.getsockname()), flush=True)
    setup_connections(listener)
