"""`process-user-data`: fetch the pod VM's cloud-config, write the allow-listed files, apply initdata."""
