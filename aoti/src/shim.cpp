// extern "C" wrapper around torch::inductor::AOTIModelPackageLoader for ddim-aoti.
//
// Tensors cross the boundary as `at::Tensor*`, the representation torch-sys uses for
// `C_tensor` (libtch's `typedef torch::Tensor *tensor`): inputs are borrowed, outputs
// are `new at::Tensor(...)` that the Rust side owns (tch frees them with `delete`).
// Errors come back as a malloc'd C string the caller frees with ddim_aoti_free_error.
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <vector>

namespace {
char* dup_error(const char* what) {
  const char* msg = what ? what : "unknown C++ exception";
  size_t n = std::strlen(msg);
  char* out = static_cast<char*>(std::malloc(n + 1));
  if (out) std::memcpy(out, msg, n + 1);
  return out;
}

// A package's kernels (`*.wrapper.so`) list libtorch.so as NEEDED. A Rust binary links
// libtorch_cpu/c10 but not the libtorch.so stub (the linker drops it as unused), and
// the binary's RUNPATH does not apply to libraries it dlopens, so make libtorch.so
// resident, from the folder this shim was built against, before the first load.
void preload_libtorch() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (!dlopen(DDIM_AOTI_LIBTORCH_DIR "/libtorch.so", RTLD_NOW | RTLD_GLOBAL)) {
      dlopen("libtorch.so", RTLD_NOW | RTLD_GLOBAL);
    }
  });
}
}  // namespace

extern "C" {

// Loads a .pt2 package. device_index: -1 for the package's default (CPU, or the
// current CUDA device), N for cuda:N. Returns null and sets *err on failure.
void* ddim_aoti_load(const char* path, int device_index, char** err) {
  *err = nullptr;
  preload_libtorch();
  try {
    auto* loader = new torch::inductor::AOTIModelPackageLoader(
        std::string(path), "model", /*run_single_threaded=*/false, /*num_runners=*/1,
        static_cast<c10::DeviceIndex>(device_index));
    return loader;
  } catch (const std::exception& e) {
    *err = dup_error(e.what());
  } catch (...) {
    *err = dup_error(nullptr);
  }
  return nullptr;
}

// Runs the package on n_in borrowed inputs; writes up to max_out owned outputs and
// their count. Returns 0 on success, -1 with *err set on failure.
int ddim_aoti_run(void* handle, at::Tensor* const* inputs, size_t n_in, at::Tensor** outputs,
                  size_t max_out, size_t* n_out, char** err) {
  *err = nullptr;
  *n_out = 0;
  try {
    auto* loader = static_cast<torch::inductor::AOTIModelPackageLoader*>(handle);
    std::vector<at::Tensor> in;
    in.reserve(n_in);
    for (size_t i = 0; i < n_in; ++i) in.push_back(*inputs[i]);
    std::vector<at::Tensor> out = loader->run(in);
    if (out.size() > max_out) {
      *err = dup_error(("the package returned " + std::to_string(out.size()) +
                        " outputs, more than the " + std::to_string(max_out) + " expected")
                           .c_str());
      return -1;
    }
    for (size_t i = 0; i < out.size(); ++i) outputs[i] = new at::Tensor(std::move(out[i]));
    *n_out = out.size();
    return 0;
  } catch (const std::exception& e) {
    *err = dup_error(e.what());
  } catch (...) {
    *err = dup_error(nullptr);
  }
  return -1;
}

void ddim_aoti_free(void* handle) {
  delete static_cast<torch::inductor::AOTIModelPackageLoader*>(handle);
}

void ddim_aoti_free_error(char* err) { std::free(err); }

}  // extern "C"
