"""The generated modules match the .proto files and keep upstream's wire names."""

from protocols.proto import hypervisor_pb2, ttrpc_pb2


def test_hypervisor_service_name_and_methods() -> None:
    service = hypervisor_pb2.DESCRIPTOR.services_by_name["Hypervisor"]
    assert service.full_name == "hypervisor.Hypervisor"
    assert [m.name for m in service.methods] == ["CreateVM", "StartVM", "StopVM", "Version"]


def test_ttrpc_request_field_numbers() -> None:
    fields = {f.name: f.number for f in ttrpc_pb2.Request.DESCRIPTOR.fields}
    assert fields == {"service": 1, "method": 2, "payload": 3, "timeout_nano": 4, "metadata": 5}
