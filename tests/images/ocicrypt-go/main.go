// ocicrypt-go: a test helper that encrypts and decrypts one image layer with Go ocicrypt, the library
// skopeo, podman and containerd use, so the tests can check that peerpods' key provider and layer
// cipher interoperate with it (Debian's skopeo is built against ocicrypt 1.0.3, which predates key
// providers). Key providers are found through OCICRYPT_KEYPROVIDER_CONFIG, as in skopeo.
//
//	ocicrypt-go encrypt <key> <plain> <cipher> <annotations.json>   (key: provider:<name>:<params> | jwe:<pub.pem>)
//	ocicrypt-go decrypt <key> <cipher> <plain> <annotations.json>   (key: provider:<name>:<params> | <priv.pem>)
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/containers/ocicrypt"
	"github.com/containers/ocicrypt/helpers"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const layerType = "application/vnd.oci.image.layer.v1.tar+gzip"

func main() {
	if len(os.Args) != 6 {
		fail(fmt.Errorf("usage: ocicrypt-go encrypt|decrypt <key> <in> <out> <annotations.json>"))
	}
	var err error
	switch os.Args[1] {
	case "encrypt":
		err = encrypt(os.Args[2], os.Args[3], os.Args[4], os.Args[5])
	case "decrypt":
		err = decrypt(os.Args[2], os.Args[3], os.Args[4], os.Args[5])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "ocicrypt-go:", err)
	os.Exit(1)
}

func encrypt(key, in, out, annotationsFile string) error {
	plain, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	cc, err := helpers.CreateCryptoConfig([]string{key}, nil)
	if err != nil {
		return err
	}
	desc := ocispec.Descriptor{MediaType: layerType, Digest: digest.FromBytes(plain), Size: int64(len(plain))}
	source, err := os.Open(in)
	if err != nil {
		return err
	}
	defer source.Close()
	reader, finalize, err := ocicrypt.EncryptLayer(cc.EncryptConfig, source, desc)
	if err != nil {
		return err
	}
	if err := copyTo(out, reader); err != nil {
		return err
	}
	annotations, err := finalize()
	if err != nil {
		return err
	}
	encoded, err := json.Marshal(annotations)
	if err != nil {
		return err
	}
	return os.WriteFile(annotationsFile, encoded, 0o600)
}

func decrypt(key, in, out, annotationsFile string) error {
	var annotations map[string]string
	encoded, err := os.ReadFile(annotationsFile)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(encoded, &annotations); err != nil {
		return err
	}
	cc, err := helpers.CreateDecryptCryptoConfig([]string{key}, nil)
	if err != nil {
		return err
	}
	source, err := os.Open(in)
	if err != nil {
		return err
	}
	defer source.Close()
	desc := ocispec.Descriptor{MediaType: layerType + "+encrypted", Annotations: annotations}
	reader, _, err := ocicrypt.DecryptLayer(cc.DecryptConfig, source, desc, false)
	if err != nil {
		return err
	}
	return copyTo(out, reader)
}

func copyTo(path string, reader io.Reader) error {
	target, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(target, reader); err != nil {
		target.Close()
		return err
	}
	return target.Close()
}
