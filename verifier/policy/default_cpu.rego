# Default attestation policy for CPU evidence ("default_cpu").
#
# Input: the annotated evidence of one attester ({"<tee>": claims, "report_data", "init_data",
# "runtime_data_claims", "init_data_claims"}). Output: an AR4SI trust vector in `trust_claims` and EAR
# extensions in `extensions`. Reference values come from the RVPS through query_reference_value(name)
# (null when absent or expired).
#
# Same decisions as Trustee's default CPU policy for snp, tdx, az-snp-vtpm and az-tdx-vtpm.
# Deliberate difference: the `sample` TEE (no hardware, no signature) is never trusted here, whatever
# reference values are registered; upstream gives it executables 3 / hardware 2 when they match.
# Use a policy of your own to accept sample evidence in tests and demos.
# Upstream has no SGX rules (SGX evidence gets no affirming claim there); the SGX section below is ours,
# shaped like the TDX one: executables from the enclave's identity (MRENCLAVE and MRSIGNER), hardware
# from Intel's verdict on the platform, configuration 3 for release enclaves only.
package policy

import rego.v1

# AR4SI values used below:
#   executables 3: only approved executables were loaded; 4: approved, boot chain not fully checked;
#                  33: unrecognized executables.
#   hardware 2: genuine, supported hardware/firmware; 97: unrecognized hardware/firmware.
#   configuration 2: approved configuration; 3: no known vulnerable configuration;
#                    36: configuration unavailable to the verifier.
#   0: no claim.
default executables := 33

default hardware := 97

default configuration := 36

default file_system := 0

default instance_identity := 0

default runtime_opaque := 0

default storage_opaque := 0

default sourced_data := 0

trust_claims := {
	"executables": executables,
	"hardware": hardware,
	"configuration": configuration,
	"file-system": file_system,
	"instance-identity": instance_identity,
	"runtime-opaque": runtime_opaque,
	"storage-opaque": storage_opaque,
	"sourced-data": sourced_data,
}

intel_quote_ok(quote) if {
	quote.header.tee_type == "81000000" # TDX
	quote.header.vendor_id == "939a7233f79c4ca9940a0db3957f0607" # Intel QE
	quote.body.mr_td in query_reference_value("mr_td")
}

##### AMD SEV-SNP

executables := 3 if {
	snp := input.snp
	snp.measurement in query_reference_value("snp_launch_measurement")
}

hardware := 2 if {
	snp := input.snp
	snp.reported_tcb_bootloader in query_reference_value("snp_bootloader")
	snp.reported_tcb_microcode in query_reference_value("snp_microcode")
	snp.reported_tcb_snp in query_reference_value("snp_snp_svn")
	snp.reported_tcb_tee in query_reference_value("snp_tee_svn")
}

configuration := 2 if {
	snp_guest_policy_safe
	snp := input.snp
	snp.platform_smt_enabled == query_reference_value("snp_smt_enabled")
	snp.platform_tsme_enabled == query_reference_value("snp_tsme_enabled")
	snp.policy_abi_major == query_reference_value("snp_guest_abi_major")
	snp.policy_abi_minor == query_reference_value("snp_guest_abi_minor")
	snp.policy_single_socket == query_reference_value("snp_single_socket")
	snp.policy_smt_allowed == query_reference_value("snp_smt_allowed")
} else := 3 if {
	snp_guest_policy_safe
}

snp_guest_policy_safe if {
	input.snp.policy_debug_allowed == false
	input.snp.policy_migrate_ma == false
}

##### Intel TDX

executables := 3 if {
	tdx_rtmrs_ok
	tdx_kernel_ok
	tdx_kernel_params_ok
} else := 4 if {
	# Grub boot (e.g. GKE): kernel and command line are only covered by the RTMRs.
	tdx_rtmrs_ok
}

tdx_rtmrs_ok if {
	input.tdx.quote.body.rtmr_1 in query_reference_value("rtmr_1")
	input.tdx.quote.body.rtmr_2 in query_reference_value("rtmr_2")
}

# The firmware's event for loading the kernel image carries the registered digest.
tdx_kernel_ok if {
	some event in input.tdx.uefi_event_logs
	event.type_name == "EV_EFI_BOOT_SERVICES_APPLICATION"
	"File(kernel)" in event.details.device_paths
	some digest in event.digests
	digest.digest == query_reference_value("tdvfkernel")
}

# The kernel command line (load options) event carries the registered digest.
tdx_kernel_params_ok if {
	some event in input.tdx.uefi_event_logs
	event.type_name == "EV_EVENT_TAG"
	event.details.string == "LOADED_IMAGE::LoadOptions"
	some digest in event.digests
	digest.digest == query_reference_value("tdvfkernelparams")
}

hardware := 2 if {
	intel_quote_ok(input.tdx.quote)
	input.tdx.tcb_status == "UpToDate"
	input.tdx.collateral_expiration_status == "0"
}

configuration := 2 if {
	input.tdx.td_attributes.debug == false
	input.tdx.quote.body.xfam in query_reference_value("xfam")
}

##### Intel SGX (ours: upstream has none)

# The enclave's code (MRENCLAVE) and the key that signed it (MRSIGNER) are both registered.
executables := 3 if {
	input.sgx.body.mr_enclave in query_reference_value("mr_enclave")
	input.sgx.body.mr_signer in query_reference_value("mr_signer")
}

hardware := 2 if {
	input.sgx.header.vendor_id == "939a7233f79c4ca9940a0db3957f0607" # Intel QE
	input.sgx.tcb_status == "UpToDate"
	input.sgx.collateral_expiration_status == "0"
}

# ATTRIBUTES.FLAGS is little-endian hex: DEBUG (bit 1) is in the second hex digit.
sgx_debug if substring(input.sgx.body["attributes.flags"], 1, 1) in {"2", "3", "6", "7", "a", "b", "e", "f"}

# Nothing in an enclave report is an approved configuration by itself: a release enclave gets
# "no known vulnerable configuration" (3), a debug enclave keeps "unavailable" (36).
configuration := 3 if {
	input.sgx
	not sgx_debug
}

##### Azure confidential VM, SEV-SNP with vTPM

executables := 3 if {
	az := input["az-snp-vtpm"]
	az.measurement in query_reference_value("measurement")
	az.tpm.pcr11 in query_reference_value("snp_pcr11")
}

hardware := 2 if {
	az := input["az-snp-vtpm"]
	az.reported_tcb_bootloader in query_reference_value("tcb_bootloader")
	az.reported_tcb_microcode in query_reference_value("tcb_microcode")
	az.reported_tcb_snp in query_reference_value("tcb_snp")
	az.reported_tcb_tee in query_reference_value("tcb_tee")
}

configuration := 2 if {
	az := input["az-snp-vtpm"]
	az.platform_smt_enabled in query_reference_value("smt_enabled")
	az.platform_tsme_enabled in query_reference_value("tsme_enabled")
	az.policy_abi_major in query_reference_value("abi_major")
	az.policy_abi_minor in query_reference_value("abi_minor")
	az.policy_single_socket in query_reference_value("single_socket")
	az.policy_smt_allowed in query_reference_value("smt_allowed")
}

##### Azure confidential VM, TDX with vTPM

executables := 3 if {
	input["az-tdx-vtpm"].tpm.pcr11 in query_reference_value("tdx_pcr11")
}

hardware := 2 if {
	az := input["az-tdx-vtpm"]
	intel_quote_ok(az.quote)
	az.tcb_status == "UpToDate"
}

configuration := 2 if {
	input["az-tdx-vtpm"].quote.body.xfam in query_reference_value("xfam")
}

##### Sample: no rule on purpose (see the header), so it keeps the contraindicated defaults.

##### Extensions: workload identifiers bound by the init data's Kata agent policy.

extensions := [{
	"name": "ear.trustee.identifiers",
	"key": -18,
	"value": {"validated": object.union(images_identifier, uids_identifier)},
}]

container_images := [image |
	some container in input.init_data_claims.agent_policy_claims.containers
	image := container.OCI.Annotations["io.kubernetes.cri.image-name"]
]

container_uids := [uid |
	some container in input.init_data_claims.agent_policy_claims.containers
	uid := container.OCI.Process.User.UID
]

images_identifier := {"container_images": container_images} if count(container_images) > 0
else := {}

uids_identifier := {"container_uids": container_uids} if count(container_uids) > 0
else := {}
