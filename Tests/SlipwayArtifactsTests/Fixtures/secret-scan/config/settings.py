# Application settings (fixture).
import os

DEBUG = False
AWS_ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DATABASE_PASSWORD = "Zr8!kQ2#vLp9xW"
DATABASE_HOST = os.environ.get("DATABASE_HOST", "localhost")
TEST_PASSWORD = "Qw3rTy!9zX#2u"  # slipway:allow-secret
