"""Intel DCAP pieces shared by the TDX and SGX verifiers: the PCK chain to the pinned Intel SGX Root
CA, ECDSA with Intel's raw encodings, quote signature data, TCB info and QE identity collateral with
their sources and store, TCB status, and the DCAP supplemental claims."""
