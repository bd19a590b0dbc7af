# KBS resource policy: may this attested requester have this resource?
#
# input: the verified attestation token's claims (EAR: input.submods.cpu0["ear.status"],
#        input.submods.cpu0["ear.veraison.annotated-evidence"]...).
# data:  {"plugin": "resource", "resource-path": [<repo>, <type>, <tag>], "query": {...}}.
# The KBS reads `data.policy.allow` (anything but true refuses).
#
# Default, as upstream's: resources go to TEEs only, never to the `sample` TEE (no hardware, no
# signature). Stricter than upstream: the token must be an EAR with a cpu0 appraisal, and an
# appraisal the attestation policy marked "contraindicated" (e.g. no matching reference values)
# gets nothing.
package policy

import rego.v1

default allow := false

allow if {
	data.plugin == "resource"
	input.submods.cpu0
	not input.submods.cpu0["ear.veraison.annotated-evidence"].sample
	not any_contraindicated
}

any_contraindicated if {
	some submod in input.submods
	submod["ear.status"] == "contraindicated"
}
