#!/bin/sh
# Nothing secret here: values come from the environment.
set -eu
: "${DEPLOY_TOKEN:?set DEPLOY_TOKEN}"
curl -fsS -H "Authorization: Bearer $DEPLOY_TOKEN" https://deploy.example.com/hooks/release
echo "password=$DB_PASSWORD" > /dev/null
