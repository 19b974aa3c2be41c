"""Authentication, roles and tenant isolation through a live engramd.

Tokens are made with `engramctl token` as an operator would. Tenant B, with
its strongest (admin) token, tries every RPC against tenant A's spaces, ids,
agents, caches and files: each attempt is refused or answered exactly as if
A's data did not exist, and A's data is byte-for-byte unchanged afterwards.
"""

import os
import signal
import subprocess
import tempfile
import time
import unittest

import grpc
import numpy as np

from engramd_fixture import EngramdProcess
from engram import (Admin, KVCache, KVModel, Memory, PermissionDeniedError,
                    ResourceExhaustedError, UnauthenticatedError)
from engram.v1 import (admin_pb2, admin_pb2_grpc, kvcache_pb2, kvcache_pb2_grpc, memory_pb2,
                       memory_pb2_grpc)

MODEL = KVModel("tiny", n_layers=2, n_kv_heads=2, head_dim=64)


def engramctl(*args):
    return subprocess.run([os.environ["ENGRAMCTL"], *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def make_token(tokens_file, *scope, role):
    return engramctl("token", "--file", tokens_file, "create", *scope, "--role", role)


def kv_tensors(tokens, seed):
    rng = np.random.default_rng(seed)
    shape = (MODEL.n_kv_heads, tokens, MODEL.head_dim)
    layers = [rng.standard_normal(shape).astype(np.float16) for _ in range(2 * MODEL.n_layers)]
    return layers[:MODEL.n_layers], layers[MODEL.n_layers:]


def every_method():
    """(full method path, client streaming, server streaming) of every RPC."""
    for module in (memory_pb2, admin_pb2, kvcache_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                yield (f"/{service.full_name}/{method.name}", method.client_streaming,
                       method.server_streaming)


def call_raw(channel, path, client_streaming, server_streaming, metadata):
    """Sends an empty request to `path`; returns the status code."""
    try:
        if client_streaming:
            call = channel.stream_unary(path)
            call(iter([b""]), timeout=10, metadata=metadata)
        elif server_streaming:
            for _ in channel.unary_stream(path)(b"", timeout=10, metadata=metadata):
                pass
        else:
            channel.unary_unary(path)(b"", timeout=10, metadata=metadata)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


class AuthTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="engram-auth-")
        cls.tokens_file = os.path.join(cls.dir, "tokens")
        t = cls.tokens_file
        cls.a_read = make_token(t, "--tenant", "tenant-a", role="read")
        cls.a_write = make_token(t, "--tenant", "tenant-a", role="write")
        cls.a_admin = make_token(t, "--tenant", "tenant-a", role="admin")
        cls.b_admin = make_token(t, "--tenant", "tenant-b", role="admin")
        cls.operator = make_token(t, "--operator", role="admin")
        cls.operator_read = make_token(t, "--operator", role="read")
        cls.export_dir = os.path.join(cls.dir, "kv")
        cls.server = EngramdProcess(
            f"auth:\n  tokens_file: {t}\nkv:\n  export_dir: {cls.export_dir}\n")
        cls.channel = grpc.insecure_channel(cls.server.address)
        cls.populate_tenant_a()

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        assert cls.server.stop() == 0, "engramd did not shut down cleanly"

    @classmethod
    def populate_tenant_a(cls):
        """Two spaces (one named like B's), episodes with history, a KV cache
        and an exported file."""
        rng = np.random.default_rng(7)
        with Memory(cls.server.address, space="shared-name", agent="alice",
                    token=cls.a_write) as a:
            a.wait_ready()
            a.create_space(dimension=8, metric="l2")
            cls.a_ids = [int(a.add(f"alice note {i} about tea", (rng.standard_normal(8) * 5)
                                   .tolist(), session="s1")) for i in range(20)]
            a.update(cls.a_ids[0], text="alice changed her mind: coffee")
            a.space = "a-only"
            a.create_space(dimension=8)
            cls.a_only_ids = [int(a.add("private plan", rng.standard_normal(8).tolist()))]
        with KVCache(cls.server.address, MODEL, token=cls.a_admin) as cache:
            keys, values = kv_tensors(64, seed=1)
            cls.kv_tokens = list(range(500, 564))
            cache.save("alice", cls.kv_tokens, keys, values)
            cache.export("alice", "a.safetensors")
        with Memory(cls.server.address, space="shared-name", agent="alice",
                    token=cls.b_admin) as b:
            b.create_space(dimension=8, metric="l2")

    def stubs(self, token):
        metadata = (("authorization", f"Bearer {token}"),)
        return (memory_pb2_grpc.MemoryServiceStub(self.channel),
                kvcache_pb2_grpc.KVCacheServiceStub(self.channel),
                admin_pb2_grpc.AdminServiceStub(self.channel), metadata)

    def snapshot_tenant_a(self):
        """Everything A can read, as bytes."""
        memory, kv, admin, md = self.stubs(self.a_admin)
        out = [memory.ListSpaces(memory_pb2.ListSpacesRequest(), metadata=md)
               .SerializeToString(deterministic=True)]
        for space, ids in (("shared-name", self.a_ids), ("a-only", self.a_only_ids)):
            request = memory_pb2.ListEpisodesRequest(space=space, include_embedding=True,
                                                     page_size=1000)
            out.append(memory.ListEpisodes(request, metadata=md)
                       .SerializeToString(deterministic=True))
            for episode_id in ids:
                out.append(memory.GetHistory(memory_pb2.GetHistoryRequest(space=space,
                                                                          id=episode_id),
                                             metadata=md).SerializeToString(deterministic=True))
        for message in kv.LoadCache(kvcache_pb2.LoadCacheRequest(agent_id="alice",
                                                                 model_id="tiny"), metadata=md):
            out.append(message.SerializeToString(deterministic=True))
        with open(os.path.join(self.export_dir, "tenant-a", "a.safetensors"), "rb") as f:
            out.append(f.read())
        return out

    def assertCode(self, code, function, *args, **kwargs):
        with self.assertRaises(grpc.RpcError) as raised:
            result = function(*args, **kwargs)
            for _ in (result if hasattr(result, "__iter__") else []):
                pass
        self.assertEqual(raised.exception.code(), code, raised.exception.details())
        if "tenant-a" not in repr(args):  # unless the caller named it itself
            self.assertNotIn("tenant-a", raised.exception.details())
        return raised.exception.details()

    def test_every_rpc_refuses_calls_without_a_valid_token(self):
        bogus = "engram_0123456789ab_" + "0" * 64
        credentials = [(), (("authorization", "Bearer " + bogus),),
                       (("authorization", "Basic dXNlcjpwYXNz"),),
                       (("authorization", "Bearer " + self.a_read[:-1] + "x"),)]
        methods = list(every_method())
        self.assertGreaterEqual(len(methods), 28)
        for path, client_streaming, server_streaming in methods:
            for metadata in credentials:
                code = call_raw(self.channel, path, client_streaming, server_streaming, metadata)
                self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED, (path, metadata))
        # Health stays open.
        health = self.channel.unary_unary("/grpc.health.v1.Health/Check")
        self.assertEqual(health(b"", timeout=10), b"\x08\x01")  # status: SERVING

    def test_roles_and_scopes(self):
        with Memory(self.server.address, space="shared-name", agent="alice",
                    token=self.a_read) as reader:
            self.assertEqual(len(reader.search([0.0] * 8, k=3)), 3)
            with self.assertRaises(PermissionDeniedError) as denied:
                reader.add("not allowed", [0.0] * 8)
            self.assertIn("needs the write role", denied.exception.message)
        with Admin(self.server.address, token=self.a_write) as admin:
            self.assertRaises(PermissionDeniedError, admin.stats)
        # ServerInfo answers any token, tenant or operator.
        for token in (self.a_read, self.operator_read):
            with Admin(self.server.address, token=token) as admin:
                self.assertTrue(admin.server_info()["auth"])
        with Admin(self.server.address, token=self.a_admin) as admin:
            stats = admin.stats()
            self.assertEqual(sorted(s["name"] for s in stats["spaces"]),
                             ["a-only", "shared-name"])
            self.assertEqual(stats.get("data_dir", ""), "")  # server-wide: the operator's
            self.assertEqual(stats.get("column_families", []), [])
            with self.assertRaises(PermissionDeniedError) as denied:
                admin.backup()
            self.assertIn("operator token", denied.exception.message)
        with Admin(self.server.address, token=self.operator) as operator:
            self.assertGreaterEqual(operator.backup().backup_id, 1)
            self.assertNotEqual(operator.stats()["data_dir"], "")
            self.assertEqual(operator.stats().get("spaces", []), [])  # holds no data
        with Admin(self.server.address, token=self.operator_read) as monitor:
            self.assertGreaterEqual(len(monitor.list_backups()), 1)
            self.assertRaises(PermissionDeniedError, monitor.backup)
        with Memory(self.server.address, space="shared-name", token=self.operator) as operator:
            with self.assertRaises(PermissionDeniedError) as denied:
                operator.search([0.0] * 8, k=1)
            self.assertIn("hold no data", denied.exception.message)
        with Memory(self.server.address, space="shared-name", token="") as anonymous:
            self.assertRaises(UnauthenticatedError, anonymous.search, [0.0] * 8)
        # The asyncio client sends the token with every call too.
        import asyncio
        from engram import aio

        async def async_calls():
            async with aio.Memory(self.server.address, space="shared-name", agent="alice",
                                  token=self.a_read) as reader:
                self.assertEqual(len(await reader.search([0.0] * 8, k=3)), 3)
                with self.assertRaises(PermissionDeniedError):
                    await reader.add("not allowed", [0.0] * 8)
            async with aio.Memory(self.server.address, space="shared-name",
                                  token="") as anonymous:
                with self.assertRaises(UnauthenticatedError):
                    await anonymous.search([0.0] * 8)

        asyncio.run(async_calls())

    def test_tenant_b_cannot_see_or_touch_tenant_a(self):
        before = self.snapshot_tenant_a()
        with KVCache(self.server.address, MODEL, token=self.operator) as cache:
            blocks_before = cache.stats().unique_layer_blocks
        memory, kv, admin, md = self.stubs(self.b_admin)
        not_found = grpc.StatusCode.NOT_FOUND
        a_id = self.a_ids[3]
        a_only = self.a_only_ids[0]
        vector = [0.5] * 8

        # Spaces: A's are unknown to B; B's own "shared-name" is B's alone.
        names = [s.name for s in memory.ListSpaces(memory_pb2.ListSpacesRequest(),
                                                   metadata=md).spaces]
        self.assertEqual(names, ["shared-name"])
        self.assertEqual(memory.GetSpace(memory_pb2.GetSpaceRequest(name="shared-name"),
                                         metadata=md).space.episode_count, 0)
        self.assertCode(not_found, memory.GetSpace, memory_pb2.GetSpaceRequest(name="a-only"),
                        metadata=md)
        self.assertCode(not_found, memory.DeleteSpace,
                        memory_pb2.DeleteSpaceRequest(name="a-only"), metadata=md)
        # Episodes by id, in B's namesake space and in A's space.
        for space, episode_id in (("shared-name", a_id), ("a-only", a_only)):
            self.assertCode(not_found, memory.GetEpisode,
                            memory_pb2.GetEpisodeRequest(space=space, id=episode_id), metadata=md)
            self.assertCode(not_found, memory.GetHistory,
                            memory_pb2.GetHistoryRequest(space=space, id=episode_id), metadata=md)
            update = memory_pb2.UpdateEpisodeRequest(space=space, id=episode_id)
            update.episode.text = "overwritten by B"
            self.assertCode(not_found, memory.UpdateEpisode, update, metadata=md)
            delete = memory_pb2.DeleteEpisodesRequest(space=space)
            delete.ids.ids.append(episode_id)
            self.assertCode(not_found, memory.DeleteEpisodes, delete, metadata=md)
        # By agent and session: B's own (empty) space, so nothing of A's.
        delete = memory_pb2.DeleteEpisodesRequest(space="shared-name", agent_id="alice")
        self.assertEqual(memory.DeleteEpisodes(delete, metadata=md).deleted, 0)
        listed = memory.ListEpisodes(memory_pb2.ListEpisodesRequest(space="shared-name"),
                                     metadata=md)
        self.assertEqual(len(listed.episodes), 0)
        for route in ("", "exact", "scan"):
            for agent in ("", "alice"):
                request = memory_pb2.SearchRequest(space="shared-name", k=50, query_text="tea")
                request.query.extend(vector)
                request.filter.agent_id = agent
                if route == "exact":
                    request.exact = True
                elif route == "scan":
                    request.scan = True
                hits = memory.Search(request, metadata=md).hits
                self.assertEqual(len(hits), 0, (route, agent))
        search = memory_pb2.SearchRequest(space="a-only", k=5)
        search.query.extend(vector)
        self.assertCode(not_found, memory.Search, search, metadata=md)
        self.assertCode(not_found, memory.AnalyzeText,
                        memory_pb2.AnalyzeTextRequest(space="a-only", text="plan"), metadata=md)
        put = memory_pb2.PutEpisodesRequest(space="a-only")
        planted = put.episodes.add().episode
        planted.agent_id, planted.text = "alice", "planted by B"
        planted.embedding.extend(vector)
        self.assertCode(not_found, memory.PutEpisodes, put, metadata=md)

        # KV caches: A's agent is unknown, shared blocks never cross tenants.
        self.assertCode(not_found, kv.LoadCache,
                        kvcache_pb2.LoadCacheRequest(agent_id="alice", model_id="tiny"),
                        metadata=md)
        match = kv.MatchPrefix(kvcache_pb2.MatchPrefixRequest(
            agent_id="alice", model=MODEL.to_proto(), token_ids=self.kv_tokens, any_agent=True),
            metadata=md)
        self.assertEqual((match.agent_tokens, match.shared_tokens), (0, 0))
        self.assertEqual(len(kv.ListCaches(kvcache_pb2.ListCachesRequest(), metadata=md).caches),
                         0)
        self.assertCode(not_found, kv.DeleteCache,
                        kvcache_pb2.DeleteCacheRequest(agent_id="alice"), metadata=md)
        self.assertCode(not_found, kv.ExportCache, kvcache_pb2.ExportCacheRequest(
            agent_id="alice", model_id="tiny", path="stolen.safetensors"), metadata=md)
        # A's export file cannot be named from B's export directory.
        self.assertCode(not_found, kv.ImportCache,
                        kvcache_pb2.ImportCacheRequest(path="a.safetensors"), metadata=md)
        for path in ("../tenant-a/a.safetensors", os.path.join(self.export_dir, "tenant-a",
                                                               "a.safetensors"),
                     "a\x00.safetensors", "x" * 300):
            self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, kv.ImportCache,
                            kvcache_pb2.ImportCacheRequest(path=path), metadata=md)
        os.makedirs(os.path.join(self.export_dir, "tenant-b"), exist_ok=True)
        link = os.path.join(self.export_dir, "tenant-b", "link.safetensors")
        if not os.path.lexists(link):
            os.symlink(os.path.join(self.export_dir, "tenant-a", "a.safetensors"), link)
        self.assertCode(grpc.StatusCode.PERMISSION_DENIED, kv.ImportCache,
                        kvcache_pb2.ImportCacheRequest(path="link.safetensors"), metadata=md)
        # The same tokens and tensors saved by B are stored again, not shared.
        with KVCache(self.server.address, MODEL, token=self.b_admin) as b_cache:
            keys, values = kv_tensors(64, seed=1)
            b_cache.save("alice", self.kv_tokens, keys, values)
            self.assertEqual(b_cache.match_prefix("alice", self.kv_tokens, any_agent=True),
                             (64, 64))
            with KVCache(self.server.address, MODEL, token=self.operator) as cache:
                self.assertGreater(cache.stats().unique_layer_blocks, blocks_before)
            b_cache.delete("alice")
        with KVCache(self.server.address, MODEL, token=self.operator) as cache:
            self.assertEqual(cache.stats().unique_layer_blocks, blocks_before)

        # Admin calls: B's Stats and rebuilds know only B; server-wide ones are refused.
        stats = admin.Stats(admin_pb2.StatsRequest(), metadata=md)
        self.assertEqual([s.name for s in stats.spaces], ["shared-name"])
        self.assertTrue(all(p.space == "shared-name" for p in stats.partitions))
        self.assertEqual(stats.data_dir, "")
        self.assertCode(not_found, admin.RebuildIndex,
                        admin_pb2.RebuildIndexRequest(space="a-only"), metadata=md)
        denied = grpc.StatusCode.PERMISSION_DENIED
        self.assertCode(denied, admin.Backup, admin_pb2.BackupRequest(), metadata=md)
        self.assertCode(denied, admin.ListBackups, admin_pb2.ListBackupsRequest(), metadata=md)
        self.assertCode(denied, admin.VerifyBackup, admin_pb2.VerifyBackupRequest(backup_id=1),
                        metadata=md)
        self.assertCode(denied, admin.RestoreBackup,
                        admin_pb2.RestoreBackupRequest(backup_id=1, name="mine"), metadata=md)
        self.assertCode(denied, admin.Checkpoint, admin_pb2.CheckpointRequest(name="mine"),
                        metadata=md)
        self.assertCode(denied, admin.Compact, admin_pb2.CompactRequest(), metadata=md)
        self.assertCode(denied, kv.Stats, kvcache_pb2.KvStatsRequest(), metadata=md)

        self.assertEqual(self.snapshot_tenant_a(), before)

    def test_sighup_reloads_the_tokens_file(self):
        token = make_token(self.tokens_file, "--tenant", "tenant-c", role="read")
        token_id = token.split("_")[1]
        memory, _, _, _ = self.stubs(token)
        md = (("authorization", f"Bearer {token}"),)

        def list_spaces_code():
            try:
                memory.ListSpaces(memory_pb2.ListSpacesRequest(), metadata=md, timeout=10)
                return grpc.StatusCode.OK
            except grpc.RpcError as error:
                return error.code()

        def wait_for(code):
            deadline = time.time() + 10
            while list_spaces_code() != code and time.time() < deadline:
                time.sleep(0.05)
            return list_spaces_code()

        self.assertEqual(list_spaces_code(), grpc.StatusCode.UNAUTHENTICATED)  # not loaded yet
        self.server.process.send_signal(signal.SIGHUP)
        self.assertEqual(wait_for(grpc.StatusCode.OK), grpc.StatusCode.OK)
        # A file that does not parse leaves the loaded tokens in force.
        with open(self.tokens_file) as f:
            good = f.read()
        with open(self.tokens_file, "w") as f:
            f.write(good + "garbage line\n")
        self.server.process.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        self.assertEqual(list_spaces_code(), grpc.StatusCode.OK)
        with open(self.tokens_file, "w") as f:
            f.write(good)
        engramctl("token", "--file", self.tokens_file, "revoke", token_id)
        self.server.process.send_signal(signal.SIGHUP)
        self.assertEqual(wait_for(grpc.StatusCode.UNAUTHENTICATED),
                         grpc.StatusCode.UNAUTHENTICATED)
        self.assertNotIn(token_id, engramctl("token", "--file", self.tokens_file, "list"))


class TenantLimitsTest(unittest.TestCase):
    """Per-tenant ceilings: each refusal names its limit, writes nothing and
    leaves the other tenant alone."""

    def start(self, limits):
        directory = tempfile.mkdtemp(prefix="engram-limits-")
        tokens = os.path.join(directory, "tokens")
        a = make_token(tokens, "--tenant", "tenant-a", role="write")
        b = make_token(tokens, "--tenant", "tenant-b", role="write")
        server = EngramdProcess(f"auth:\n  tokens_file: {tokens}\ntenant_limits:\n{limits}")
        self.addCleanup(lambda: self.assertEqual(server.stop(), 0))
        return server, a, b

    def test_episodes_bytes_and_kv_bytes(self):
        server, a_token, b_token = self.start(
            "  max_episodes: 10\n  max_stored_mb: 1\n  max_kv_mb: 1\n")
        a = Memory(server.address, space="notes", agent="alice", token=a_token)
        b = Memory(server.address, space="notes", agent="bob", token=b_token)
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        for memory in (a, b):
            memory.create_space(dimension=2)
            memory.add_many([{"text": f"n{i}", "embedding": [1.0, float(i)]} for i in range(8)])
        with self.assertRaises(ResourceExhaustedError) as refused:
            a.add_many([{"text": f"m{i}", "embedding": [1.0, 0.0]} for i in range(3)])
        self.assertIn("tenant_limits.max_episodes (10)", refused.exception.message)
        self.assertIsNone(refused.exception.retry_after)  # retrying soon would not help
        self.assertEqual(len(list(a.list())), 8)  # nothing of the batch was written
        b.add_many([{"text": f"m{i}", "embedding": [1.0, 0.0]} for i in range(2)])
        # Deleting makes room again.
        a.delete([e.id for e in a.list()][:2])
        a.add_many([{"text": f"m{i}", "embedding": [1.0, 0.0]} for i in range(4)])
        # One batch larger than max_stored_mb is refused by its own size.
        a.delete([e.id for e in a.list()][:5])
        big = [{"text": "x" * 250_000, "embedding": [1.0, 0.0]} for _ in range(5)]
        with self.assertRaises(ResourceExhaustedError) as refused:
            a.add_many(big)
        self.assertIn("tenant_limits.max_stored_mb (1 MiB)", refused.exception.message)
        self.assertEqual(len(list(a.list())), 5)

        with KVCache(server.address, MODEL, token=a_token) as cache:
            keys, values = kv_tensors(2048, seed=3)
            cache.save("alice", list(range(2048)), keys, values)  # about 590 KB of blocks
            with self.assertRaises(ResourceExhaustedError) as refused:
                cache.save("carol", list(range(10_000, 12_048)), keys, values)
            self.assertIn("tenant_limits.max_kv_mb (1 MiB)", refused.exception.message)
            self.assertEqual([c.agent_id for c in cache.list()], ["alice"])
        with KVCache(server.address, MODEL, token=b_token) as cache:
            cache.save("carol", list(range(10_000, 12_048)), keys, values)

    def test_request_rate(self):
        server, a_token, b_token = self.start("  requests_per_s: 2\n  burst: 3\n")
        a = Memory(server.address, space="notes", token=a_token)
        b = Memory(server.address, space="notes", token=b_token)
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        a.wait_ready()
        for _ in range(3):
            a.list_spaces()
        with self.assertRaises(ResourceExhaustedError) as refused:
            a.list_spaces()
        self.assertIn("tenant_limits.requests_per_s = 2", refused.exception.message)
        # The refusal says when a token is back: half a second at 2 per second.
        self.assertIsNotNone(refused.exception.retry_after)
        self.assertGreater(refused.exception.retry_after, 0.0)
        self.assertLessEqual(refused.exception.retry_after, 0.5)
        b.list_spaces()  # the other tenant has its own bucket
        time.sleep(0.6)
        a.list_spaces()
        # A write refused by the rate is retried after that delay, so a
        # burst of writes all land, each once (the bucket is full again
        # after 1.5 s: 3 calls, then one per 0.5 s).
        time.sleep(1.6)
        a.create_space(dimension=2)
        began = time.monotonic()
        ids = [a.add(f"burst {i}", embedding=[1.0, float(i)], agent="alice") for i in range(4)]
        # Two of the four waited for a token: the client slept as told.
        self.assertGreaterEqual(time.monotonic() - began, 0.9)
        self.assertEqual(len(set(ids)), 4)
        time.sleep(0.6)
        self.assertEqual(sorted(e.id for e in a.list()), sorted(ids))

        # A KV save (a stream) refused by the rate carries the delay too;
        # KVCache sends the whole save again after it.
        keys, values = kv_tensors(64, seed=4)
        tokens = list(range(64))
        time.sleep(1.6)
        with KVCache(server.address, MODEL, token=a_token, write_attempts=1) as once, \
                KVCache(server.address, MODEL, token=a_token) as retrying:
            for _ in range(3):
                a.list_spaces()
            with self.assertRaises(ResourceExhaustedError) as refused:
                once.save("alice", tokens, keys, values)
            self.assertIn("tenant_limits.requests_per_s", refused.exception.message)
            self.assertIsNotNone(refused.exception.retry_after)
            self.assertLessEqual(refused.exception.retry_after, 0.5)
            began = time.monotonic()
            saved = retrying.save("alice", tokens, keys, values)
            self.assertGreaterEqual(time.monotonic() - began, 0.2)
            self.assertEqual(saved.tokens, 64)
            time.sleep(0.6)
            loaded_tokens, loaded_keys, _ = retrying.load("alice")
            self.assertEqual(loaded_tokens, tokens)
            self.assertEqual(loaded_keys[0].shape, keys[0].shape)


class OpenListenerTest(unittest.TestCase):
    def start(self, *flags):
        directory = tempfile.mkdtemp(prefix="engram-open-")
        return subprocess.run(
            [os.environ["ENGRAMD"], "--data-dir", os.path.join(directory, "data"),
             "--metrics-address", "off", "--listen", "0.0.0.0:0", *flags],
            capture_output=True, text=True, timeout=60)

    def test_refuses_an_open_address_without_auth_and_tls(self):
        result = self.start()
        self.assertEqual(result.returncode, 2)
        self.assertIn("reachable from other machines", result.stderr)
        self.assertIn("--insecure", result.stderr)

    def test_insecure_flag_accepts_the_risk(self):
        directory = tempfile.mkdtemp(prefix="engram-open-")
        port_file = os.path.join(directory, "port")
        process = subprocess.Popen(
            [os.environ["ENGRAMD"], "--data-dir", os.path.join(directory, "data"),
             "--metrics-address", "off", "--listen", "0.0.0.0:0", "--port-file", port_file,
             "--insecure", "--log-level", "warn"])
        try:
            deadline = time.time() + 30
            while not os.path.exists(port_file) and time.time() < deadline:
                self.assertIsNone(process.poll())
                time.sleep(0.02)
            self.assertTrue(os.path.exists(port_file))
        finally:
            process.send_signal(signal.SIGTERM)
            self.assertEqual(process.wait(timeout=30), 0)


if __name__ == "__main__":
    unittest.main()
