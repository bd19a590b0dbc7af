"""Cloud providers: each turns a pod sandbox into a (confidential) instance behind `Provider`."""
