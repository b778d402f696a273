// XLA custom-call target `pyengine_linear`: out[M, N] = x[M, K] . w^T (+ bias[N]), float32, for a weight
// stored w[N, K] ("nk", torch's Linear) or w[K, N] ("kn", Keras' Dense and GPT-2's Conv1D), over the same
// small-M kernels (include/pyengine/gemv.h) the torch decode path uses.
//
// Why: XLA:CPU's dot emitter is slow at the few rows of a decode step. A 12-layer GPT-2-small step of
// products took 37 ms at 8 rows under jax.jit (23 ms here) and 167 ms under TF's jit_compile with the
// [V, E] tied head (20 ms here); see benchmarks/README.md. Callers use it up to 64 rows and leave bigger
// products (prefill) to XLA.
//
// Framework-free: no XLA headers. Both frameworks call it through the status-returning custom-call ABI
// (`API_VERSION_STATUS_RETURNING_UNIFIED` on CPU): `fn(out, inputs, opaque, opaque_len, status)`. The
// shapes travel in `opaque` as "M K N has_bias"; the Python wrappers (pyengine/backends/{jax,tf}/
// kernels.py) check every shape and dtype before they emit the call, so nothing is validated here.
// Registration: JAX through `jax.ffi.register_ffi_target(..., api_version=0)`; TensorFlow has no Python
// API for it, so `pyengine_register_tf_target` calls the registry TensorFlow's own library exports.
#include <dlfcn.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>

#include "pyengine/gemv.h"
#include "team.h"

namespace {

constexpr int64_t kChunk = 16;  // output columns per work item, as the torch LinearPlan splits them

struct LinearShape {
  int64_t M = 0, K = 0, N = 0;
  bool bias = false, kn = false;
};

LinearShape parse(const char* opaque, size_t len) {
  LinearShape s;
  long long m = 0, k = 0, n = 0, b = 0, kn = 0;
  const std::string text(opaque, len);  // not NUL-terminated by XLA
  if (std::sscanf(text.c_str(), "%lld %lld %lld %lld %lld", &m, &k, &n, &b, &kn) >= 4) {
    s.M = m;
    s.K = k;
    s.N = n;
    s.bias = b != 0;
    s.kn = kn != 0;
  }
  return s;
}

}  // namespace

extern "C" {

// The custom call: inputs {x [M, K], w [N, K] or [K, N], (bias [N])}, output [M, N], all float32 row-major.
__attribute__((visibility("default"))) void pyengine_linear(void* out, const void** in, const char* opaque,
                                                            size_t opaque_len, void* /*status*/) {
  const LinearShape s = parse(opaque, opaque_len);
  const float* x = static_cast<const float*>(in[0]);
  const float* w = static_cast<const float*>(in[1]);
  const float* bias = s.bias ? static_cast<const float*>(in[2]) : nullptr;
  float* o = static_cast<float*>(out);
  const int64_t chunks = (s.N + kChunk - 1) / kChunk;
  if (s.M <= 0 || chunks == 0) return;
  // Contiguous column ranges per member: each core streams its own slice of the weight matrix.
  const bool big = s.N * s.K >= (1 << 16);
  pyengine::xla::Team::get().run(big ? chunks : 1, [&](int member, int members) {
    const int64_t c0 = chunks * member / members, c1 = chunks * (member + 1) / members;
    const int64_t n0 = c0 * kChunk, n1 = std::min(s.N, c1 * kChunk);
    if (n0 < n1 && s.kn) pyengine::gemv_kn(x, s.K, s.M, w, s.K, s.N, n0, n1, o, s.N, bias, false);
    if (n0 < n1 && !s.kn) pyengine::gemv_nk(x, s.K, s.M, w, s.K, n0, n1, o, s.N, nullptr, bias, false);
  });
}

// Registers `fn` under `name` for XLA:CPU ("Host") in the registry of the TensorFlow library at
// `library` (its libtensorflow_cc.so.2, already loaded). Returns 0, or 1 when the library is not
// loaded, 2 when it does not export the registry.
__attribute__((visibility("default"))) int pyengine_register_tf_target(const char* library, const char* name,
                                                                       void* fn) {
  void* handle = dlopen(library, RTLD_NOW | RTLD_NOLOAD);
  if (!handle) return 1;
  // xla::CustomCallTargetRegistry::Global() and ::Register(const std::string&, void*, const std::string&),
  // called through their Itanium-ABI symbols (a member function takes `this` first).
  struct Registry;
  using Global = Registry* (*)();
  using Register = void (*)(Registry*, const std::string&, void*, const std::string&);
  auto global = reinterpret_cast<Global>(dlsym(handle, "_ZN3xla24CustomCallTargetRegistry6GlobalEv"));
  auto reg = reinterpret_cast<Register>(dlsym(
      handle,
      "_ZN3xla24CustomCallTargetRegistry8RegisterERKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEEPvS8_"));
  dlclose(handle);  // NOLOAD took a reference; TensorFlow keeps the library loaded
  if (!global || !reg) return 2;
  reg(global(), std::string(name), fn, std::string("Host"));
  return 0;
}

}  // extern "C"
