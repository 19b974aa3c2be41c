"""Operations on a running engramd: statistics, compaction, checkpoints,
backups and index rebuilds (engram.v1.AdminService)."""

import dataclasses
from typing import Callable, Dict, List, Optional

import grpc
from google.protobuf import json_format

from engram._client import GrpcClient
from engram.errors import EngramError, translate_errors
from engram.v1 import admin_pb2, admin_pb2_grpc


@dataclasses.dataclass
class BackupInfo:
    backup_id: int
    timestamp_s: int
    size_bytes: int
    file_count: int


def _backup_from_proto(backup) -> BackupInfo:
    return BackupInfo(backup.backup_id, backup.timestamp_s, backup.size_bytes, backup.file_count)


class Admin(GrpcClient):
    """Administers one engramd. Long operations (compact, rebuild_index) block
    until done and report progress to an optional callback; every method
    raises an EngramError subclass on failure."""

    def __init__(self, address: str = "127.0.0.1:50051", timeout: float = 30.0,
                 **connection):
        """`connection`: token and TLS options (engram._client.GrpcClient)."""
        super().__init__(address, timeout, **connection)
        self._stub = admin_pb2_grpc.AdminServiceStub(self._channel)

    @translate_errors
    def stats(self) -> Dict:
        """Spaces, column families, index partitions, index health and the scan
        backend, as a dict with the proto's field names."""
        response = self._stub.Stats(admin_pb2.StatsRequest(), timeout=self.timeout)
        return json_format.MessageToDict(response, preserving_proto_field_name=True,
                                         including_default_value_fields=True)

    @translate_errors
    def server_info(self) -> Dict:
        """engramd's version, build, wire contract ("engram.v1"), embedders,
        scan backend, and whether auth and TLS are on; any token may ask."""
        response = self._stub.ServerInfo(admin_pb2.ServerInfoRequest(), timeout=self.timeout)
        return json_format.MessageToDict(response, preserving_proto_field_name=True,
                                         including_default_value_fields=True)

    @translate_errors
    def compact(self, progress: Optional[Callable[[float, str], None]] = None) -> None:
        """Compacts the whole store; `progress(fraction, stage)` after each step."""
        for update in self._stub.Compact(admin_pb2.CompactRequest()):
            if progress is not None:
                progress(update.fraction, update.stage)

    @translate_errors
    def rebuild_index(self, space: str,
                      progress: Optional[Callable[[int, int], None]] = None) -> None:
        """Rebuilds a space's vector index while searches go on;
        `progress(indexed, total)` as it advances."""
        for update in self._stub.RebuildIndex(admin_pb2.RebuildIndexRequest(space=space)):
            if progress is not None:
                progress(update.indexed, update.total)

    @translate_errors
    def checkpoint(self, name: str) -> str:
        """An openable copy of the store under checkpoint_dir; returns its path."""
        return self._stub.Checkpoint(admin_pb2.CheckpointRequest(name=name),
                                     timeout=self.timeout).path

    @translate_errors
    def backup(self) -> BackupInfo:
        return _backup_from_proto(
            self._stub.Backup(admin_pb2.BackupRequest(), timeout=self.timeout).backup)

    @translate_errors
    def list_backups(self) -> List[BackupInfo]:
        response = self._stub.ListBackups(admin_pb2.ListBackupsRequest(), timeout=self.timeout)
        return [_backup_from_proto(backup) for backup in response.backups]

    @translate_errors
    def verify_backup(self, backup_id: int) -> None:
        """Raises when the backup's files do not match what it recorded."""
        response = self._stub.VerifyBackup(admin_pb2.VerifyBackupRequest(backup_id=backup_id),
                                           timeout=self.timeout)
        if not response.ok:
            raise EngramError(grpc.StatusCode.DATA_LOSS, response.message)

    @translate_errors
    def restore_backup(self, name: str, backup_id: int = 0) -> str:
        """Restores a backup (0: the latest) into a new directory under
        restore_dir and returns its path; the live store is never touched."""
        return self._stub.RestoreBackup(
            admin_pb2.RestoreBackupRequest(backup_id=backup_id, name=name),
            timeout=self.timeout).path
