// Bindings of the CPU execution settings (qwen35_trt/cpu.h): the thread count and the ISA of the
// reference's NVFP4 kernels. Neither changes a result.
#include <pybind11/pybind11.h>

#include <string>

#include "bindings.h"
#include "qwen35_trt/cpu.h"

namespace qwen35_trt::bindings {

void register_cpu(py::module_& m) {
  m.def(
      "set_cpu_threads",
      [](int n) {
        if (n < 1) throw py::value_error("n: must be >= 1, got " + std::to_string(n));
        cpu::set_num_threads(static_cast<std::size_t>(n));
      },
      py::arg("n"),
      "Threads the CPU reference's NVFP4 GEMMs split their output rows over (default 1). "
      "Results do not depend on it.");
  m.def(
      "cpu_threads", [] { return cpu::num_threads(); },
      "The thread count set by set_cpu_threads.");
  m.def(
      "cpu_isa", [] { return std::string(cpu::isa_name(cpu::isa())); },
      "The instruction set of the CPU reference's NVFP4 kernels: 'avx2' or 'portable' (chosen "
      "from the CPU, or forced by QWEN35_CPU_ISA).");
  m.def(
      "set_cpu_isa",
      [](const std::string& name) {
        try {
          cpu::set_isa(cpu::parse_isa(name.c_str()));
        } catch (const std::invalid_argument& e) {
          throw py::value_error(e.what());
        }
      },
      py::arg("name"),
      "Force the CPU kernels' instruction set ('portable' or 'avx2'; ValueError when this CPU "
      "lacks it). Results do not depend on it.");
}

}  // namespace qwen35_trt::bindings
