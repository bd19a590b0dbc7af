image_path  = "/var/cache/peerpods/podvm.tar.gz"
project_id  = "example-peerpods"
bucket_name = "example-peerpods-podvm-images"
