"""Key broker service (Trustee KBS protocol)."""
