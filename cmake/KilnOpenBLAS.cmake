# kiln::openblas: OpenBLAS's CBLAS interface. The OpenMP build (Debian:
# libopenblas-openmp-dev) shares kiln's OpenMP thread pool; the pthreads build
# would start a second pool that spins against it on small machines.
set(_kiln_blas_dirs ${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp openblas-openmp)
find_path(KILN_CBLAS_INCLUDE_DIR cblas.h PATH_SUFFIXES ${_kiln_blas_dirs} openblas NO_DEFAULT_PATH
          PATHS /usr/include /usr/local/include)
find_library(KILN_OPENBLAS_LIBRARY NAMES openblas PATH_SUFFIXES ${_kiln_blas_dirs} NO_DEFAULT_PATH
             PATHS /usr/lib /usr/local/lib)
if(NOT KILN_CBLAS_INCLUDE_DIR OR NOT KILN_OPENBLAS_LIBRARY)
  find_path(KILN_CBLAS_INCLUDE_DIR cblas.h PATH_SUFFIXES openblas)
  find_library(KILN_OPENBLAS_LIBRARY NAMES openblas)
endif()
if(NOT KILN_CBLAS_INCLUDE_DIR OR NOT KILN_OPENBLAS_LIBRARY)
  message(FATAL_ERROR "OpenBLAS not found: install libopenblas-openmp-dev")
endif()
message(STATUS "kiln: OpenBLAS ${KILN_OPENBLAS_LIBRARY}")
add_library(kiln_openblas INTERFACE)
add_library(kiln::openblas ALIAS kiln_openblas)
target_include_directories(kiln_openblas INTERFACE ${KILN_CBLAS_INCLUDE_DIR})
target_link_libraries(kiln_openblas INTERFACE ${KILN_OPENBLAS_LIBRARY})
