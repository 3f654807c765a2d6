# Installs kiln from KILN_BUILD_DIR into a fresh prefix, then configures,
# builds and runs the consumer project against it; with KILN_TOOLS, the
# installed tools must run from the prefix too.
file(REMOVE_RECURSE ${WORK_DIR})
function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGV}")
  endif()
endfunction()
run(${CMAKE_COMMAND} --install ${KILN_BUILD_DIR} --prefix ${WORK_DIR}/prefix)
run(${CMAKE_COMMAND} -S ${CONSUMER_SOURCE_DIR} -B ${WORK_DIR}/build -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix
    -DCMAKE_BUILD_TYPE=Release)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
run(${WORK_DIR}/build/consumer)
if(KILN_TOOLS)
  foreach(tool prepare_data train pretrain generate)
    run(${WORK_DIR}/prefix/bin/${tool} --help OUTPUT_QUIET)
  endforeach()
endif()
