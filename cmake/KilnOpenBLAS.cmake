# kiln::openblas: OpenBLAS's CBLAS interface. kiln runs it single-threaded
# inside its own pool's split of each GEMM, so the build's threading is never
# started. The pthreads build (Debian: libopenblas-pthread-dev) is looked for
# first: the OpenMP build's single-threaded calls, made from several of
# kiln's threads at once, do not scale (each enters the OpenMP runtime). Searched
# under CMAKE_PREFIX_PATH first (a prefix of unpacked packages on machines
# without them), then the system.
set(_kiln_blas_roots ${CMAKE_PREFIX_PATH} /usr /usr/local)
set(_kiln_arch ${CMAKE_LIBRARY_ARCHITECTURE})
find_path(KILN_CBLAS_INCLUDE_DIR cblas.h PATHS ${_kiln_blas_roots} NO_DEFAULT_PATH
          PATH_SUFFIXES include/${_kiln_arch}/openblas-pthread include/openblas-pthread include/openblas)
find_library(KILN_OPENBLAS_LIBRARY NAMES openblas PATHS ${_kiln_blas_roots} NO_DEFAULT_PATH
             PATH_SUFFIXES lib/${_kiln_arch}/openblas-pthread lib/openblas-pthread)
if(NOT KILN_CBLAS_INCLUDE_DIR OR NOT KILN_OPENBLAS_LIBRARY)
  find_path(KILN_CBLAS_INCLUDE_DIR cblas.h PATH_SUFFIXES openblas)
  find_library(KILN_OPENBLAS_LIBRARY NAMES openblas)
endif()
if(NOT KILN_CBLAS_INCLUDE_DIR OR NOT KILN_OPENBLAS_LIBRARY)
  message(FATAL_ERROR "OpenBLAS not found: install libopenblas-pthread-dev")
endif()
message(STATUS "kiln: OpenBLAS ${KILN_OPENBLAS_LIBRARY}")
add_library(kiln_openblas INTERFACE)
add_library(kiln::openblas ALIAS kiln_openblas)
target_include_directories(kiln_openblas INTERFACE ${KILN_CBLAS_INCLUDE_DIR})
target_link_libraries(kiln_openblas INTERFACE ${KILN_OPENBLAS_LIBRARY})
