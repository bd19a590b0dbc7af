"""Azure confidential VM vTPM evidence: TPM quotes, HCL reports and the checks SNP and TDX share."""
