# Built-in resource policy of `kbs-client config set-resource-policy --allow-all`: every attested
# requester may read every resource, whatever its TEE or appraisal. For tests and demos only.
package policy

import rego.v1

default allow := false

allow if data.plugin == "resource"
