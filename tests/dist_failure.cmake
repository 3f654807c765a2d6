# Runs dist_failure under mpirun: it must fail quickly with rank 1's message, not hang.
#   cmake -DMPIRUN="..." -DPROGRAM=... -P dist_failure.cmake
separate_arguments(mpirun UNIX_COMMAND "${MPIRUN}")
execute_process(COMMAND ${mpirun} -np 3 ${PROGRAM} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err
                TIMEOUT 120)
if(rc MATCHES "timeout|Process terminated due to timeout")
  message(FATAL_ERROR "the ranks hung after rank 1 failed:\n${out}\n${err}")
endif()
if(rc EQUAL 0)
  message(FATAL_ERROR "mpirun succeeded although rank 1 failed:\n${out}\n${err}")
endif()
if(NOT "${out}${err}" MATCHES "rank 1 failed on purpose")
  message(FATAL_ERROR "rank 1's error is missing from the output:\n${out}\n${err}")
endif()
message(STATUS "every rank ended (exit ${rc}) with: rank 1 failed on purpose")
