// Third-party code (fixture): excluded with `path:vendor/` in the allowlist tests.
module.exports = { password: "Vendor#Secret42x" };
