"""The committed gRPC stubs never drift from proto/: regenerate them with
grpc_tools.protoc into a temporary folder and compare byte for byte
(scripts/gen_proto.sh rewrites the committed ones)."""

import filecmp
import glob
import os

import pytest
from testkit import ROOT


pytestmark = pytest.mark.timeout(60)


def test_committed_stubs_match_the_proto_files(tmp_path):
    protoc = pytest.importorskip("grpc_tools.protoc", reason="grpcio-tools is not installed")
    import grpc_tools

    protos = sorted(glob.glob(os.path.join(ROOT, "proto", "**", "*.proto"), recursive=True))
    assert protos, "no .proto files under proto/"
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(["grpc_tools.protoc", f"-I{os.path.join(ROOT, 'proto')}", f"-I{include}",
                      f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}", *protos])
    assert rc == 0, "protoc failed on proto/"
    made = sorted(os.path.relpath(p, tmp_path)
                  for p in glob.glob(os.path.join(tmp_path, "**", "*.py"), recursive=True))
    assert made
    stale = [rel for rel in made
             if not os.path.exists(os.path.join(ROOT, rel))
             or not filecmp.cmp(os.path.join(tmp_path, rel), os.path.join(ROOT, rel),
                                shallow=False)]
    assert not stale, f"stubs out of date (run scripts/gen_proto.sh): {stale}"


def test_package_is_versioned():
    from meanshift_proto.v1 import service_pb2

    assert service_pb2.DESCRIPTOR.package == "secure_meanshift.v1"
    assert "Coordinator" in service_pb2.DESCRIPTOR.services_by_name
