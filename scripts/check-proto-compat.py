#!/usr/bin/python3
"""Checks that the engram.v1 wire contract only grew since its last release.

The rule (README, "Compatibility"): in engram.v1, messages, fields, enum
values, services and methods are only ever added. Compared with the released
descriptor set kept in proto/released/, it is a break to remove or rename a
file, message, field, enum, enum value, service or method; to change a
field's number, type, label (singular, repeated, optional) or oneof; to
change an enum value's number; or to change a method's request, response or
streaming. Names matter as well as numbers, because JSON (engramctl's output,
grpc-gateway users) spells fields by name.

  scripts/check-proto-compat.py                 # compare proto/ with the release
  scripts/check-proto-compat.py --update        # make the current protos the release
  scripts/check-proto-compat.py --proto-dir D --released F   # (the tests' own use)

Exit status 1 lists every break found.
"""

import argparse
import os
import subprocess
import sys
import tempfile

from google.protobuf import descriptor_pb2, text_format

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
RELEASED = os.path.join(ROOT, "proto", "released", "engram-v1.txtpb")


def current_descriptors(proto_dir):
    """The FileDescriptorSet of proto_dir/engram/v1/*.proto, from protoc."""
    files = sorted(os.path.join("engram", "v1", name)
                   for name in os.listdir(os.path.join(proto_dir, "engram", "v1"))
                   if name.endswith(".proto"))
    with tempfile.TemporaryDirectory() as work:
        out = os.path.join(work, "set.pb")
        subprocess.run(["protoc", f"-I{proto_dir}", f"--descriptor_set_out={out}", *files],
                       check=True)
        descriptors = descriptor_pb2.FileDescriptorSet()
        with open(out, "rb") as f:
            descriptors.ParseFromString(f.read())
    return descriptors


def _label(field):
    if field.label == field.LABEL_REPEATED:
        return "repeated"
    return "optional" if field.proto3_optional else "singular"


def _oneof(message, field):
    if not field.HasField("oneof_index") or field.proto3_optional:
        return ""
    return message.oneof_decl[field.oneof_index].name


def _compare_message(where, old, new, breaks):
    new_fields = {f.number: f for f in new.field}
    for field in old.field:
        name = f"{where}.{field.name} (= {field.number})"
        now = new_fields.get(field.number)
        if now is None:
            breaks.append(f"{name}: field removed")
            continue
        if now.name != field.name:
            breaks.append(f"{name}: renamed to {now.name}")
        if (now.type, now.type_name) != (field.type, field.type_name):
            breaks.append(f"{name}: type changed from "
                          f"{field.type_name or descriptor_pb2.FieldDescriptorProto.Type.Name(field.type)}"
                          f" to {now.type_name or descriptor_pb2.FieldDescriptorProto.Type.Name(now.type)}")
        if _label(now) != _label(field):
            breaks.append(f"{name}: {_label(field)} became {_label(now)}")
        if _oneof(new, now) != _oneof(old, field):
            breaks.append(f"{name}: oneof '{_oneof(old, field)}' became '{_oneof(new, now)}'")
    _compare_types(where, old.nested_type, new.nested_type, old.enum_type, new.enum_type, breaks)


def _compare_enum(where, old, new, breaks):
    new_values = {v.name: v.number for v in new.value}
    for value in old.value:
        if value.name not in new_values:
            breaks.append(f"{where}.{value.name}: enum value removed")
        elif new_values[value.name] != value.number:
            breaks.append(f"{where}.{value.name}: number {value.number} became "
                          f"{new_values[value.name]}")


def _compare_types(where, old_messages, new_messages, old_enums, new_enums, breaks):
    messages = {m.name: m for m in new_messages}
    for message in old_messages:
        if message.name not in messages:
            breaks.append(f"{where}.{message.name}: message removed")
        else:
            _compare_message(f"{where}.{message.name}", message, messages[message.name], breaks)
    enums = {e.name: e for e in new_enums}
    for enum in old_enums:
        if enum.name not in enums:
            breaks.append(f"{where}.{enum.name}: enum removed")
        else:
            _compare_enum(f"{where}.{enum.name}", enum, enums[enum.name], breaks)


def breaking_changes(released, current):
    """Every break from `released` to `current` (FileDescriptorSets), as text."""
    breaks = []
    files = {f.name: f for f in current.file}
    for old in released.file:
        new = files.get(old.name)
        if new is None:
            breaks.append(f"{old.name}: file removed")
            continue
        if new.package != old.package:
            breaks.append(f"{old.name}: package {old.package} became {new.package}")
        _compare_types(old.package, old.message_type, new.message_type, old.enum_type,
                       new.enum_type, breaks)
        services = {s.name: s for s in new.service}
        for service in old.service:
            now = services.get(service.name)
            if now is None:
                breaks.append(f"{old.package}.{service.name}: service removed")
                continue
            methods = {m.name: m for m in now.method}
            for method in service.method:
                name = f"{old.package}.{service.name}.{method.name}"
                m = methods.get(method.name)
                if m is None:
                    breaks.append(f"{name}: method removed")
                    continue
                for part in ("input_type", "output_type", "client_streaming",
                             "server_streaming"):
                    if getattr(m, part) != getattr(method, part):
                        breaks.append(f"{name}: {part} {getattr(method, part)} became "
                                      f"{getattr(m, part)}")
    return breaks


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--proto-dir", default=os.path.join(ROOT, "proto"))
    parser.add_argument("--released", default=RELEASED)
    parser.add_argument("--update", action="store_true",
                        help="write the current protos as the released contract")
    args = parser.parse_args()
    current = current_descriptors(args.proto_dir)
    for file in current.file:  # comments and options are not the contract
        file.ClearField("source_code_info")
        file.ClearField("options")
    if args.update:
        os.makedirs(os.path.dirname(args.released), exist_ok=True)
        with open(args.released, "w") as f:
            f.write("# The engram.v1 contract as released: scripts/check-proto-compat.py "
                    "compares proto/ with it.\n")
            f.write(text_format.MessageToString(current))
        print(f"wrote {args.released}")
        return 0
    released = descriptor_pb2.FileDescriptorSet()
    with open(args.released) as f:
        text_format.Parse(f.read(), released)
    breaks = breaking_changes(released, current)
    for line in breaks:
        print(f"breaking: {line}")
    if breaks:
        print(f"{len(breaks)} breaking change(s) to engram.v1; add fields, messages and "
              "methods instead (or start engram.v2)")
        return 1
    print(f"engram.v1 is wire compatible with {os.path.relpath(args.released, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
