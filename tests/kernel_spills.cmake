# Fails when a hot kernel spills registers or keeps a stack frame at sm_90a:
# the tensor-core attention, the row kernels (softmax, norms,
# cross-entropy), the optimizer updates and the elementwise kernels. Reads
# ptxas's own report (-Xptxas -v) of the build's compile of each file, which
# cmake/ptxas_report keeps beside its object.
#
#   cmake -DOBJECTS="a.cu.o|b.cu.o|..." -P kernel_spills.cmake
#
# Exempt: CUDA's own sin and cos, whose range reduction of huge arguments
# (a path libdevice rarely takes) keeps a 32-40 byte stack frame.
set(files attention_mma.cu rows.cu optimizers.cu elementwise.cu)
set(exempt "::(Sin|Cos)[,>]")
find_program(CXXFILT c++filt REQUIRED)  # the exemptions match demangled names
set(failures "")
set(kernels 0)
string(REPLACE "|" ";" objects "${OBJECTS}")
foreach(f ${files})
  set(report "")
  foreach(o ${objects})
    if(o MATCHES "/${f}\\.o$")
      set(report ${o}.ptxas)
    endif()
  endforeach()
  if(NOT EXISTS "${report}")
    message(FATAL_ERROR "no ptxas report of ${f} (${report}): build kiln_kernels_cuda with cmake/ptxas_report")
  endif()
  file(STRINGS ${report} lines)
  set(function "")
  foreach(line IN LISTS lines)
    if(line MATCHES "Compiling entry function '([^']+)' for '([^']+)'")
      set(function "")
      if(CMAKE_MATCH_2 STREQUAL "sm_90a")
        set(function ${CMAKE_MATCH_1})
        math(EXPR kernels "${kernels} + 1")
      endif()
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
if(kernels EQUAL 0)
  message(FATAL_ERROR "the ptxas reports of ${files} hold no sm_90a kernels")
endif()
if(failures)
  message(FATAL_ERROR "hot kernels that spill or use a stack frame at sm_90a:\n${failures}")
endif()
string(REPLACE ";" ", " listed "${files}")
message(STATUS "${kernels} kernels of ${listed}: no spills, no stack frames at sm_90a (sin and cos exempt)")
