"""Seed a running S3-compatible server (moto's standalone server) with a user, a bucket and a folder's files.

Run with the interpreter of the server's own environment (.tools/s3-server, made by `make setup`): it has
boto3, the reference client, so the objects our own SigV4 client reads were written by another client.
Prints {"access_key", "secret_key"} as JSON. Usage: s3_seed.py ENDPOINT BUCKET PREFIX FOLDER
"""

import json
import sys
from pathlib import Path

import boto3

endpoint, bucket, prefix, folder = sys.argv[1:5]
anonymous = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": "seed",
             "aws_secret_access_key": "seed"}
iam = boto3.client("iam", **anonymous)
iam.create_user(UserName="fetcher")
iam.put_user_policy(UserName="fetcher", PolicyName="read", PolicyDocument=json.dumps({
    "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
key = iam.create_access_key(UserName="fetcher")["AccessKey"]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key["AccessKeyId"],
                  aws_secret_access_key=key["SecretAccessKey"])
s3.create_bucket(Bucket=bucket)
for path in sorted(Path(folder).rglob("*")):
    if path.is_file():
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(folder).as_posix()}", Body=path.read_bytes())
print(json.dumps({"access_key": key["AccessKeyId"], "secret_key": key["SecretAccessKey"]}))
