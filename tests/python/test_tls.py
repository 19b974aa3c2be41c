"""TLS and mTLS through a live engramd, with certificates made by openssl at
test time: a CA, a server certificate for localhost/127.0.0.1, a client
certificate the tokens file maps to a tenant, one it does not map, and one
from a CA engramd does not trust."""

import os
import shutil
import subprocess
import tempfile
import time
import unittest

from engramd_fixture import EngramdProcess
from engram import Memory, PermissionDeniedError, UnauthenticatedError, UnavailableError


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=cwd)


def make_ca(directory, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=directory)


def make_cert(directory, ca, name, san=None):
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout",
            f"{name}.key", "-out", f"{name}.csr", cwd=directory)
    extensions = os.path.join(directory, f"{name}.ext")
    with open(extensions, "w") as f:
        f.write(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-extfile", extensions, "-out", f"{name}.pem",
            cwd=directory)


def engramctl(*args):
    return subprocess.run([os.environ["ENGRAMCTL"], *args], check=True, capture_output=True,
                          text=True).stdout.strip()


class TlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.certs = tempfile.mkdtemp(prefix="engram-tls-")
        d = cls.certs
        make_ca(d, "ca")
        make_ca(d, "rogue-ca")
        make_cert(d, "ca", "server", san="DNS:localhost,IP:127.0.0.1")
        make_cert(d, "ca", "agent-7")
        make_cert(d, "ca", "stranger")
        make_cert(d, "rogue-ca", "impostor")
        cls.tokens = os.path.join(d, "tokens")
        cls.writer = engramctl("token", "--file", cls.tokens, "create", "--tenant", "acme",
                               "--role", "write")
        engramctl("token", "--file", cls.tokens, "map-cert", "--common-name", "agent-7",
                  "--tenant", "acme", "--role", "read")
        cls.server = EngramdProcess(
            f"auth:\n  tokens_file: {cls.tokens}\n"
            f"tls:\n  cert_file: {d}/server.pem\n  key_file: {d}/server.key\n"
            f"  client_ca_file: {d}/ca.pem\n")
        cls.port = cls.server.address.split(":")[1]

    @classmethod
    def tearDownClass(cls):
        assert cls.server.stop() == 0, "engramd did not shut down cleanly"
        shutil.rmtree(cls.certs, ignore_errors=True)

    def client(self, name=None, token="", address=None):
        d = self.certs
        memory = Memory(address or f"localhost:{self.port}", space="notes", agent="alice",
                        token=token, timeout=10, tls_ca_file=f"{d}/ca.pem",
                        tls_cert_file=f"{d}/{name}.pem" if name else None,
                        tls_key_file=f"{d}/{name}.key" if name else None)
        self.addCleanup(memory.close)
        return memory

    def test_a_token_over_mtls_acts_for_its_tenant(self):
        writer = self.client("stranger", token=self.writer)
        writer.wait_ready()
        if "notes" not in [s.name for s in writer.list_spaces()]:
            writer.create_space(dimension=3)
        episode = writer.add("over tls", [0.1, 0.2, 0.3])
        # The mapped certificate alone reads acme's data and may not write.
        reader = self.client("agent-7")
        self.assertEqual(reader.get(episode).text, "over tls")
        with self.assertRaises(PermissionDeniedError):
            reader.add("refused", [0.1, 0.2, 0.3])
        # A verified but unmapped certificate, without a token, is no one.
        with self.assertRaises(UnauthenticatedError):
            self.client("stranger").list_spaces()

    def test_the_handshake_refuses_what_it_cannot_verify(self):
        # No client certificate, one from an untrusted CA, and plaintext.
        for memory in (self.client(None, token=self.writer),
                       self.client("impostor", token=self.writer),
                       Memory(f"127.0.0.1:{self.port}", token=self.writer, timeout=3)):
            with self.assertRaises(UnavailableError):
                memory.list_spaces()
            memory.close()
        # The client refuses a server whose certificate does not carry the name.
        d = self.certs
        with Memory(f"127.0.0.1:{self.port}", token=self.writer, timeout=3,
                    tls_ca_file=f"{d}/ca.pem", tls_cert_file=f"{d}/agent-7.pem",
                    tls_key_file=f"{d}/agent-7.key", tls_server_name="not-engram") as wrong:
            with self.assertRaises(UnavailableError):
                wrong.list_spaces()

    def test_engramctl_speaks_tls(self):
        d = self.certs
        result = subprocess.run(
            [os.environ["ENGRAMCTL"], "-a", f"localhost:{self.port}", "--tls-ca", f"{d}/ca.pem",
             "--tls-cert", f"{d}/agent-7.pem", "--tls-key", f"{d}/agent-7.key", "space", "list"],
            capture_output=True, text=True, timeout=30)
        self.assertEqual(result.returncode, 0, result.stderr)
        health = subprocess.run(
            [os.environ["ENGRAMCTL"], "-a", f"localhost:{self.port}", "--timeout", "3",
             "health"], capture_output=True, text=True, timeout=30)
        self.assertNotEqual(health.returncode, 0)  # plaintext to a TLS port

    def test_renewed_certificates_apply_without_a_restart(self):
        d = self.certs
        directory = tempfile.mkdtemp(prefix="engram-tls-rotate-")
        self.addCleanup(shutil.rmtree, directory, True)
        make_ca(directory, "next-ca")
        make_cert(directory, "next-ca", "renewed", san="DNS:localhost,IP:127.0.0.1")
        live = os.path.join(directory, "live")
        os.mkdir(live)
        shutil.copy(f"{d}/server.pem", f"{live}/cert.pem")
        shutil.copy(f"{d}/server.key", f"{live}/key.pem")
        server = EngramdProcess(
            f"tls:\n  cert_file: {live}/cert.pem\n  key_file: {live}/key.pem\n"
            "  reload_interval_s: 1\n")
        self.addCleanup(lambda: self.assertEqual(server.stop(), 0))
        port = server.address.split(":")[1]

        def works(ca):
            with Memory(f"localhost:{port}", token="", timeout=3, tls_ca_file=ca) as memory:
                try:
                    memory.list_spaces()
                    return True
                except UnavailableError:
                    return False

        self.assertTrue(works(f"{d}/ca.pem"))
        self.assertFalse(works(f"{directory}/next-ca.pem"))
        # Renewal as certificate managers do it: new files moved into place.
        for source, target in (("renewed.key", "key.pem"), ("renewed.pem", "cert.pem")):
            shutil.copy(os.path.join(directory, source), os.path.join(live, target + ".new"))
            os.rename(os.path.join(live, target + ".new"), os.path.join(live, target))
        deadline = time.time() + 15
        while not works(f"{directory}/next-ca.pem") and time.time() < deadline:
            time.sleep(0.2)
        self.assertTrue(works(f"{directory}/next-ca.pem"), "the renewed certificate was not served")
        self.assertFalse(works(f"{d}/ca.pem"))

    def test_a_key_that_is_not_the_certificates_stops_the_start(self):
        d = self.certs
        directory = tempfile.mkdtemp(prefix="engram-tls-bad-")
        config = os.path.join(directory, "engramd.yaml")
        with open(config, "w") as f:
            f.write(f"tls:\n  cert_file: {d}/server.pem\n  key_file: {d}/agent-7.key\n")
        started = time.time()
        result = subprocess.run(
            [os.environ["ENGRAMD"], "--config", config, "--listen", "127.0.0.1:0",
             "--data-dir", os.path.join(directory, "data"), "--metrics-address", "off"],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 1)
        self.assertIn("is not the key of tls.cert_file", result.stderr)
        self.assertLess(time.time() - started, 30)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
