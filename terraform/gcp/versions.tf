terraform {
  required_version = ">= 1.0"

  required_providers {
    google = {
      source = "hashicorp/google"
      # guest_os_features TDX_CAPABLE and SEV_SNP_CAPABLE are accepted by the 6.x schema.
      version = ">= 6.0, < 8.0"
    }
  }
}
