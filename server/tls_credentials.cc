#include "server/tls_credentials.h"

#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstdio>

#include "absl/strings/str_cat.h"

namespace engram::server {
namespace {

struct FileCloser {
  void operator()(FILE* file) const { std::fclose(file); }
};
using File = std::unique_ptr<FILE, FileCloser>;

absl::StatusOr<File> Open(const std::string& path, const char* what) {
  File file(std::fopen(path.c_str(), "rb"));
  if (file == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("cannot read ", what, " '", path, "'"));
  }
  return file;
}

using Certificate = std::unique_ptr<X509, decltype(&X509_free)>;

// The first PEM certificate of `path` (`what` names the config key).
absl::StatusOr<Certificate> ReadCertificate(const std::string& path, const char* what) {
  absl::StatusOr<File> file = Open(path, what);
  if (!file.ok()) return file.status();
  Certificate cert(PEM_read_X509(file->get(), nullptr, nullptr, nullptr), X509_free);
  if (cert == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, " '", path, "' holds no PEM certificate"));
  }
  return cert;
}

// The certificate and key must parse and belong together; the CA bundle
// must hold at least one certificate.
absl::Status CheckFiles(const TlsConfig& tls) {
  absl::StatusOr<Certificate> cert = ReadCertificate(tls.cert_file, "tls.cert_file");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<File> key_file = Open(tls.key_file, "tls.key_file");
  if (!key_file.ok()) return key_file.status();
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
      PEM_read_PrivateKey(key_file->get(), nullptr, nullptr, nullptr), EVP_PKEY_free);
  if (key == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("tls.key_file '", tls.key_file, "' holds no unencrypted PEM private key"));
  }
  if (X509_check_private_key(cert->get(), key.get()) != 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "tls.key_file '", tls.key_file, "' is not the key of tls.cert_file '", tls.cert_file, "'"));
  }
  if (!tls.client_ca_file.empty()) {
    absl::StatusOr<Certificate> ca = ReadCertificate(tls.client_ca_file, "tls.client_ca_file");
    if (!ca.ok()) return ca.status();
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ListenerCredentials(const TlsConfig& tls) {
  if (tls.cert_file.empty()) return grpc::InsecureServerCredentials();
  if (absl::Status checked = CheckFiles(tls); !checked.ok()) return checked;
  const auto interval = static_cast<unsigned int>(tls.reload_interval_s);
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      tls.key_file, tls.cert_file, tls.client_ca_file, interval);
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (tls.client_ca_file.empty()) {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

}  // namespace engram::server
