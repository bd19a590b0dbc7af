image_path = "/var/cache/peerpods-image/latest/podvm.qcow2"
