"""A real `tessera serve` on 127.0.0.1 for the Python integration tests (not a test itself).

ServeProcess(model, name, extra_args) starts it on free HTTP and gRPC ports with one local worker,
waits (bounded) until GET /health answers 200 and raises with the server's log when it exits or
never gets healthy; stop() terminates it (kill after 30 s). The log lives in `log_dir`.
"""
import os
import socket
import subprocess
import time
import urllib.request

BIN = os.environ.get("TESSERA_BIN", "tessera")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    def __init__(self, model, name, log_dir, extra_args=(), timeout=180):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(log_dir, "serve.log"), "w+")
        self.process = subprocess.Popen(
            [BIN, "serve", "--model", model, "--served-model-name", name,
             "--http-port", str(self.port), "--grpc-port", str(free_port()),
             "--local-workers", "1", *extra_args],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError("tessera serve exited:\n" + self.log_text())
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except Exception:
                pass
            if time.time() > deadline:
                self.stop()
                raise AssertionError(f"tessera serve not healthy in {timeout} s:\n" +
                                     self.log_text())
            time.sleep(0.2)

    def log_text(self):
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
