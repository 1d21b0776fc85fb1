"""Sign an image as `openstack image create --sign-key-path` does (openstacksdk's ImageSigner).

Usage: osc_sign.py KEY.pem IMAGE CERT_UUID [HASH_METHOD]
Prints the four img_signature* properties as JSON, exactly as python-openstackclient sets them.
"""
import base64
import json
import sys

from openstack.image.image_signer import ImageSigner


def main():
    key_path, image_path, cert_uuid = sys.argv[1:4]
    hash_method = sys.argv[4] if len(sys.argv) > 4 else "SHA-256"
    signer = ImageSigner(hash_method=hash_method, padding_method="RSA-PSS")
    signer.load_private_key(key_path)
    with open(image_path, "rb") as f:
        signature = signer.generate_signature(f)
    print(json.dumps({
        "img_signature": base64.b64encode(signature).decode(),
        "img_signature_certificate_uuid": cert_uuid,
        "img_signature_hash_method": signer.hash_method,
        "img_signature_key_type": signer.padding_method,
    }))


if __name__ == "__main__":
    main()
