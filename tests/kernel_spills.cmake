# Fails when a hot kernel spills registers or keeps a stack frame at sm_90a:
# the tensor-core attention, the row kernels (softmax, norms,
# cross-entropy), the optimizer updates and the elementwise kernels. Reads
# ptxas's own report (-Xptxas -v) of each file compiled for sm_90a alone.
#
#   cmake -DNVCC=... -DSOURCE_DIR=... -DOUT_DIR=... -P kernel_spills.cmake
#
# Exempt: CUDA's own sin and cos, whose range reduction of huge arguments
# (a path libdevice rarely takes) keeps a 32-40 byte stack frame.
set(files attention_mma.cu rows.cu optimizers.cu elementwise.cu)
set(exempt "::(Sin|Cos)[,>]")
file(MAKE_DIRECTORY ${OUT_DIR})
find_program(CXXFILT c++filt REQUIRED)  # the exemptions match demangled names
set(failures "")
set(kernels 0)
foreach(f ${files})
  execute_process(
    COMMAND ${NVCC} -std=c++20 --expt-relaxed-constexpr -O3 -DNDEBUG -cubin -arch=sm_90a -Xptxas -v
            -I${SOURCE_DIR}/kernels/cuda/src -I${SOURCE_DIR}/kernels/cuda/include -I${SOURCE_DIR}/core/base/include
            -o ${OUT_DIR}/${f}.cubin ${SOURCE_DIR}/kernels/cuda/src/${f}
    RESULT_VARIABLE rc ERROR_VARIABLE report OUTPUT_QUIET)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "nvcc could not compile ${f} for sm_90a:\n${report}")
  endif()
  string(REPLACE "\n" ";" lines "${report}")
  set(function "")
  foreach(line IN LISTS lines)
    if(line MATCHES "Compiling entry function '([^']+)'")
      set(function ${CMAKE_MATCH_1})
      math(EXPR kernels "${kernels} + 1")
    elseif(line MATCHES "([0-9]+) bytes stack frame, ([0-9]+) bytes spill stores, ([0-9]+) bytes spill loads")
      set(usage "${CMAKE_MATCH_1} bytes stack frame, ${CMAKE_MATCH_2} spill stores, ${CMAKE_MATCH_3} spill loads")
      if(NOT (CMAKE_MATCH_1 EQUAL 0 AND CMAKE_MATCH_2 EQUAL 0 AND CMAKE_MATCH_3 EQUAL 0) AND function)
        execute_process(COMMAND ${CXXFILT} ${function} OUTPUT_VARIABLE name OUTPUT_STRIP_TRAILING_WHITESPACE)
        if(NOT name MATCHES "${exempt}")
          string(APPEND failures "  ${f}: ${name}: ${usage}\n")
        endif()
      endif()
      set(function "")
    endif()
  endforeach()
endforeach()
if(failures)
  message(FATAL_ERROR "hot kernels that spill or use a stack frame at sm_90a:\n${failures}")
endif()
string(REPLACE ";" ", " listed "${files}")
message(STATUS "${kernels} kernels of ${listed}: no spills, no stack frames at sm_90a (sin and cos exempt)")
