# Built-in resource policy of `kbs-client config set-resource-policy --affirming`: resources are
# released only when every appraisal in the token is "affirming" (the attestation policy matched
# reference values for everything it checks).
package policy

import rego.v1

default allow := false

allow if {
	count(input.submods) > 0
	not any_not_affirming
}

any_not_affirming if {
	some submod in input.submods
	submod["ear.status"] != "affirming"
}
