# A good drover worker in 20 lines: socket from fd 3, READY=1, WATCHDOG=1, drain on TERM.
import os, signal, socket, time
notify_path = os.environ.get("NOTIFY_SOCKET")
def notify(msg):
    if notify_path:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s: s.sendto(msg.encode(), notify_path)
listener = socket.socket(fileno=3)          # LISTEN_FDS=1: the first socket is fd 3
listener.settimeout(0.5)                    # wake up to heartbeat and to notice TERM
stopping = False
def on_term(*_):
    global stopping; stopping = True        # finish the request in hand, then exit 0
signal.signal(signal.SIGTERM, on_term)
beat = float(os.environ.get("WATCHDOG_USEC", "0")) / 2e6   # beat at half the timeout
notify("READY=1"); last = 0.0
while not stopping:
    if beat and time.monotonic() - last > beat: notify("WATCHDOG=1"); last = time.monotonic()
    try: conn, _ = listener.accept()
    except (socket.timeout, InterruptedError): continue
    with conn:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello\n")
