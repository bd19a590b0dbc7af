image_path = "/var/cache/peerpods/podvm.qcow2"
