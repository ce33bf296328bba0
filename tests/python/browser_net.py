"""Chromium in a network namespace of its own, reaching the machine through a SOCKS5 proxy.

Why: Chromium drops every request in flight, and every idle connection, with
`net::ERR_NETWORK_CHANGED` whenever an address is added to or removed from any interface it
can see. The tests run deployments beside the browser, and each one makes and removes Docker
bridge networks, so a page's module, a sign-in's POST or a live feed failed now and then in CI
for no fault of the product. In a namespace holding only its own loopback, nothing ever
changes under Chromium; the proxy's listening socket is made inside that namespace and its
outgoing connections in the machine's, so the pages still reach every server the tests start
(and `*.localhost` names, which Chromium would resolve to loopback, resolve so on the proxy).

Needs root (to make the namespace); elsewhere Chromium runs as it is, with a warning.
"""

import asyncio
import ctypes
import os
import socket
import subprocess
import tempfile
import threading
import warnings

NAMESPACE = "nullops-browser"
CHROMIUM = "/usr/bin/chromium"
_CLONE_NEWNET = 0x40000000

_started = None
_lock = threading.Lock()


def chromium_launch_options():
    """What `chromium.launch` takes to run Chromium isolated this way (started once per process)."""
    global _started
    with _lock:
        if _started is None:
            _started = _start()
    return dict(_started)


def _start():
    namespace = _namespace()
    if namespace is None:
        warnings.warn("Chromium shares the machine's network: a Docker network made meanwhile may drop its requests")
        return {"executable_path": CHROMIUM}
    listener = _listen_in(namespace)
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(asyncio.start_server(_socks5, sock=listener))
        ready.set()
        loop.run_forever()

    threading.Thread(target=serve, name="browser-socks5", daemon=True).start()
    ready.wait(10)
    wrapper = os.path.join(tempfile.mkdtemp(prefix="nullops-chromium-"), "chromium")
    with open(wrapper, "w") as f:
        f.write(f"#!/bin/sh\nexec nsenter --net={namespace} {CHROMIUM} \"$@\"\n")
    os.chmod(wrapper, 0o755)
    port = listener.getsockname()[1]
    # <-loopback>: Chromium otherwise goes straight to loopback addresses, which in its
    # namespace lead nowhere.
    return {"executable_path": wrapper, "args": [f"--proxy-server=socks5://127.0.0.1:{port}", "--proxy-bypass-list=<-loopback>"]}


def _namespace():
    if os.geteuid() != 0:
        return None
    path = f"/run/netns/{NAMESPACE}"
    if not os.path.exists(path):
        # Another test process may make it at the same time: either one's is the one.
        subprocess.run(["ip", "netns", "add", NAMESPACE], stderr=subprocess.DEVNULL, check=False)
    if subprocess.run(["ip", "-n", NAMESPACE, "link", "set", "lo", "up"], check=False).returncode != 0:
        return None
    return path


def _listen_in(namespace):
    """A listening socket on the namespace's loopback, made by a thread that enters it and
    leaves again (a socket keeps the namespace it was made in)."""
    made = {}

    def make():
        libc = ctypes.CDLL(None, use_errno=True)
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        there = os.open(namespace, os.O_RDONLY)
        try:
            if libc.setns(there, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "cannot enter the browser's network namespace")
            try:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind(("127.0.0.1", 0))
                s.listen(256)
                s.setblocking(False)
                made["socket"] = s
            finally:
                if libc.setns(home, _CLONE_NEWNET) != 0:
                    made["error"] = OSError(ctypes.get_errno(), "cannot leave the browser's network namespace")
        except OSError as e:
            made["error"] = e
        finally:
            os.close(home)
            os.close(there)

    t = threading.Thread(target=make)
    t.start()
    t.join()
    if "error" in made:
        raise made["error"]
    return made["socket"]


async def _socks5(reader, writer):
    """One SOCKS5 CONNECT (RFC 1928, no authentication), then bytes both ways."""
    upstream = None
    try:
        version, methods = await reader.readexactly(2)
        await reader.readexactly(methods)
        if version != 5:
            return
        writer.write(b"\x05\x00")
        _, command, _, kind = await reader.readexactly(4)
        if kind == 1:
            host = socket.inet_ntoa(await reader.readexactly(4))
        elif kind == 3:
            host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
        elif kind == 4:
            host = socket.inet_ntop(socket.AF_INET6, await reader.readexactly(16))
        else:
            return
        port = int.from_bytes(await reader.readexactly(2), "big")
        if command != 1:
            writer.write(b"\x05\x07\x00\x01" + bytes(6))
            return
        if host == "localhost" or host.endswith(".localhost"):
            host = "127.0.0.1"
        try:
            upstream = await asyncio.open_connection(host, port)
        except OSError:
            writer.write(b"\x05\x05\x00\x01" + bytes(6))
            return
        writer.write(b"\x05\x00\x00\x01" + bytes(6))
        await asyncio.gather(_pipe(reader, upstream[1]), _pipe(upstream[0], writer))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        for w in (writer, upstream[1] if upstream else None):
            if w is not None:
                w.close()


async def _pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        if writer.can_write_eof():
            try:
                writer.write_eof()
            except OSError:
                pass
