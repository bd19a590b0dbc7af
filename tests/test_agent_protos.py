"""The Kata agent protos match upstream on the wire: service names, method order and types, field
numbers of everything the proxy rewrites, and lossless round-trips of fields we do not know."""

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from protocols.proto import agent_pb2, health_pb2, oci_pb2

_SCALAR_NAMES = {
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_UINT64: "uint64",
}

EMPTY = "google.protobuf.Empty"

AGENT_METHODS = [
    ("CreateContainer", "grpc.CreateContainerRequest", EMPTY),
    ("StartContainer", "grpc.StartContainerRequest", EMPTY),
    ("RemoveContainer", "grpc.RemoveContainerRequest", EMPTY),
    ("ExecProcess", "grpc.ExecProcessRequest", EMPTY),
    ("SignalProcess", "grpc.SignalProcessRequest", EMPTY),
    ("WaitProcess", "grpc.WaitProcessRequest", "grpc.WaitProcessResponse"),
    ("UpdateContainer", "grpc.UpdateContainerRequest", EMPTY),
    ("UpdateEphemeralMounts", "grpc.UpdateEphemeralMountsRequest", EMPTY),
    ("StatsContainer", "grpc.StatsContainerRequest", "grpc.StatsContainerResponse"),
    ("PauseContainer", "grpc.PauseContainerRequest", EMPTY),
    ("ResumeContainer", "grpc.ResumeContainerRequest", EMPTY),
    ("RemoveStaleVirtiofsShareMounts", "grpc.RemoveStaleVirtiofsShareMountsRequest", EMPTY),
    ("GetDiagnosticData", "grpc.GetDiagnosticDataRequest", "grpc.GetDiagnosticDataResponse"),
    ("WriteStdin", "grpc.WriteStreamRequest", "grpc.WriteStreamResponse"),
    ("ReadStdout", "grpc.ReadStreamRequest", "grpc.ReadStreamResponse"),
    ("ReadStderr", "grpc.ReadStreamRequest", "grpc.ReadStreamResponse"),
    ("CloseStdin", "grpc.CloseStdinRequest", EMPTY),
    ("TtyWinResize", "grpc.TtyWinResizeRequest", EMPTY),
    ("UpdateInterface", "grpc.UpdateInterfaceRequest", "types.Interface"),
    ("UpdateRoutes", "grpc.UpdateRoutesRequest", "grpc.Routes"),
    ("ListInterfaces", "grpc.ListInterfacesRequest", "grpc.Interfaces"),
    ("ListRoutes", "grpc.ListRoutesRequest", "grpc.Routes"),
    ("AddARPNeighbors", "grpc.AddARPNeighborsRequest", EMPTY),
    ("GetIPTables", "grpc.GetIPTablesRequest", "grpc.GetIPTablesResponse"),
    ("SetIPTables", "grpc.SetIPTablesRequest", "grpc.SetIPTablesResponse"),
    ("GetMetrics", "grpc.GetMetricsRequest", "grpc.Metrics"),
    ("MemAgentMemcgSet", "grpc.MemAgentMemcgConfig", EMPTY),
    ("MemAgentCompactSet", "grpc.MemAgentCompactConfig", EMPTY),
    ("CreateSandbox", "grpc.CreateSandboxRequest", EMPTY),
    ("DestroySandbox", "grpc.DestroySandboxRequest", EMPTY),
    ("OnlineCPUMem", "grpc.OnlineCPUMemRequest", EMPTY),
    ("ReseedRandomDev", "grpc.ReseedRandomDevRequest", EMPTY),
    ("GetGuestDetails", "grpc.GuestDetailsRequest", "grpc.GuestDetailsResponse"),
    ("MemHotplugByProbe", "grpc.MemHotplugByProbeRequest", EMPTY),
    ("SetGuestDateTime", "grpc.SetGuestDateTimeRequest", EMPTY),
    ("CopyFile", "grpc.CopyFileRequest", EMPTY),
    ("GetOOMEvent", "grpc.GetOOMEventRequest", "grpc.OOMEvent"),
    ("AddSwap", "grpc.AddSwapRequest", EMPTY),
    ("AddSwapPath", "grpc.AddSwapPathRequest", EMPTY),
    ("GetVolumeStats", "grpc.VolumeStatsRequest", "grpc.VolumeStatsResponse"),
    ("ResizeVolume", "grpc.ResizeVolumeRequest", EMPTY),
    ("SetPolicy", "grpc.SetPolicyRequest", EMPTY),
]


def _fields(descriptor: Descriptor) -> dict[str, tuple[int, str]]:
    """Each field as (number, proto type), e.g. (5, "repeated grpc.Storage"), for whole-table asserts."""
    table = {}
    for field in descriptor.fields:
        if field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                key, value = field.message_type.fields
                kind = f"map<{_SCALAR_NAMES[key.type]},{_SCALAR_NAMES[value.type]}>"
                table[field.name] = (field.number, kind)
                continue
            kind = field.message_type.full_name
        elif field.enum_type is not None:
            kind = field.enum_type.full_name
        else:
            kind = _SCALAR_NAMES[field.type]
        if field.is_repeated:
            kind = f"repeated {kind}"
        table[field.name] = (field.number, kind)
    return table


def test_agent_service_methods_in_upstream_order() -> None:
    service = agent_pb2.DESCRIPTOR.services_by_name["AgentService"]
    assert service.full_name == "grpc.AgentService"
    methods = [(m.name, m.input_type.full_name, m.output_type.full_name) for m in service.methods]
    assert methods == AGENT_METHODS
    assert len(methods) == 42


def test_health_service_methods() -> None:
    service = health_pb2.DESCRIPTOR.services_by_name["Health"]
    assert service.full_name == "grpc.Health"
    methods = [(m.name, m.input_type.full_name, m.output_type.full_name) for m in service.methods]
    assert methods == [
        ("Check", "grpc.CheckRequest", "grpc.HealthCheckResponse"),
        ("Version", "grpc.CheckRequest", "grpc.VersionCheckResponse"),
    ]


def test_create_container_request_fields() -> None:
    assert _fields(agent_pb2.CreateContainerRequest.DESCRIPTOR) == {
        "container_id": (1, "string"),
        "exec_id": (2, "string"),
        "string_user": (3, "grpc.StringUser"),
        "devices": (4, "repeated grpc.Device"),
        "storages": (5, "repeated grpc.Storage"),
        "OCI": (6, "grpc.Spec"),
        "sandbox_pidns": (7, "bool"),
        "shared_mounts": (8, "repeated grpc.SharedMount"),
        "stdin_port": (9, "uint32"),
        "stdout_port": (10, "uint32"),
        "stderr_port": (11, "uint32"),
    }


def test_create_sandbox_request_fields() -> None:
    assert _fields(agent_pb2.CreateSandboxRequest.DESCRIPTOR) == {
        "hostname": (1, "string"),
        "dns": (2, "repeated string"),
        "storages": (3, "repeated grpc.Storage"),
        "sandbox_pidns": (4, "bool"),
        "sandbox_id": (5, "string"),
        "guest_hook_path": (6, "string"),
        "kernel_modules": (7, "repeated grpc.KernelModule"),
    }


def test_spec_fields() -> None:
    assert _fields(oci_pb2.Spec.DESCRIPTOR) == {
        "Version": (1, "string"),
        "Process": (2, "grpc.Process"),
        "Root": (3, "grpc.Root"),
        "Hostname": (4, "string"),
        "Mounts": (5, "repeated grpc.Mount"),
        "Hooks": (6, "grpc.Hooks"),
        "Annotations": (7, "map<string,string>"),
        "Linux": (8, "grpc.Linux"),
        "Solaris": (9, "grpc.Solaris"),
        "Windows": (10, "grpc.Windows"),
    }


def test_linux_and_namespace_fields() -> None:
    assert _fields(oci_pb2.Linux.DESCRIPTOR) == {
        "UIDMappings": (1, "repeated grpc.LinuxIDMapping"),
        "GIDMappings": (2, "repeated grpc.LinuxIDMapping"),
        "Sysctl": (3, "map<string,string>"),
        "Resources": (4, "grpc.LinuxResources"),
        "CgroupsPath": (5, "string"),
        "Namespaces": (6, "repeated grpc.LinuxNamespace"),
        "Devices": (7, "repeated grpc.LinuxDevice"),
        "Seccomp": (8, "grpc.LinuxSeccomp"),
        "RootfsPropagation": (9, "string"),
        "MaskedPaths": (10, "repeated string"),
        "ReadonlyPaths": (11, "repeated string"),
        "MountLabel": (12, "string"),
        "IntelRdt": (13, "grpc.LinuxIntelRdt"),
    }
    assert _fields(oci_pb2.LinuxNamespace.DESCRIPTOR) == {"Type": (1, "string"), "Path": (2, "string")}


def test_storage_fields() -> None:
    assert _fields(agent_pb2.Storage.DESCRIPTOR) == {
        "driver": (1, "string"),
        "driver_options": (2, "repeated string"),
        "source": (3, "string"),
        "fstype": (4, "string"),
        "options": (5, "repeated string"),
        "mount_point": (6, "string"),
        "fs_group": (7, "grpc.FSGroup"),
        "shared": (8, "bool"),
    }


def test_copy_file_request_fields() -> None:
    assert _fields(agent_pb2.CopyFileRequest.DESCRIPTOR) == {
        "path": (1, "string"),
        "file_size": (2, "int64"),
        "file_mode": (3, "uint32"),
        "dir_mode": (4, "uint32"),
        "uid": (5, "int32"),
        "gid": (6, "int32"),
        "offset": (7, "int64"),
        "data": (8, "bytes"),
    }


def test_stream_and_wait_fields() -> None:
    assert _fields(agent_pb2.ReadStreamRequest.DESCRIPTOR) == {
        "container_id": (1, "string"),
        "exec_id": (2, "string"),
        "len": (3, "uint32"),
    }
    assert _fields(agent_pb2.ReadStreamResponse.DESCRIPTOR) == {"data": (1, "bytes")}
    assert _fields(agent_pb2.WaitProcessResponse.DESCRIPTOR) == {"status": (1, "int32")}


def test_health_check_response_fields_and_enum() -> None:
    assert _fields(health_pb2.HealthCheckResponse.DESCRIPTOR) == {
        "status": (1, "grpc.HealthCheckResponse.ServingStatus"),
    }
    enum = health_pb2.HealthCheckResponse.ServingStatus.DESCRIPTOR
    assert {v.name: v.number for v in enum.values} == {"UNKNOWN": 0, "SERVING": 1, "NOT_SERVING": 2}


def test_oneof_and_optional_presence_match_upstream() -> None:
    syscall = oci_pb2.LinuxSyscall.DESCRIPTOR
    assert [f.name for f in syscall.oneofs_by_name["ErrnoRet"].fields] == ["errnoret"]
    # errno 0 must still be on the wire: that is why upstream uses a oneof.
    assert oci_pb2.LinuxSyscall(errnoret=0).SerializeToString() == b"\x18\x00"
    for config in (agent_pb2.MemAgentMemcgConfig, agent_pb2.MemAgentCompactConfig):
        assert all(f.has_presence for f in config.DESCRIPTOR.fields)
    assert agent_pb2.MemAgentMemcgConfig(disabled=False).SerializeToString() == b"\x08\x00"


def test_health_check_response_serving_bytes() -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    assert health_pb2.HealthCheckResponse(status=serving).SerializeToString() == b"\x08\x01"
    assert health_pb2.HealthCheckResponse.FromString(b"\x08\x01").status == serving


def test_unknown_fields_survive_round_trip_byte_exact() -> None:
    # Hand-encoded, known fields in number order so re-serialisation is canonical:
    #   1: container_id "c1"; 6: OCI { 8: Linux { 6: Namespaces [{Type "network"}] }, 50: 0x2a }
    #   99: length-delimited b"future" (unknown to us, e.g. a newer runtime's field).
    namespace = b"\x0a\x07network"
    linux = b"\x32" + bytes([len(namespace)]) + namespace
    spec = b"\x42" + bytes([len(linux)]) + linux + b"\x90\x03\x2a"
    wire = b"\x0a\x02c1" + b"\x32" + bytes([len(spec)]) + spec + b"\x9a\x06\x06future"

    request = agent_pb2.CreateContainerRequest.FromString(wire)
    assert request.container_id == "c1"
    assert [ns.Type for ns in request.OCI.Linux.Namespaces] == ["network"]
    assert request.SerializeToString() == wire
