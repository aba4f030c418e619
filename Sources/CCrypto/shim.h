// OpenSSL's libcrypto (Debian libssl-dev), for SHA-256 of dataset images.
#include <openssl/evp.h>
