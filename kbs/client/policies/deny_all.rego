# Built-in resource policy of `kbs-client config set-resource-policy --deny-all`: nothing is released.
package policy

import rego.v1

default allow := false
