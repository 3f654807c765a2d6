# Runs every row of bad_command_lines.txt: the program must exit with a code
# (not a signal), non-zero, within a minute, printing one line to stderr that
# holds the row's text. The files the rows point at are made here first: a
# corpus, token ids past its vocabulary, configs with damaged numbers, and run
# directories whose `latest` is missing or escapes them.
#   cmake -DBIN=<examples dir> -DWORK=<scratch dir> -DTABLE=<bad_command_lines.txt> -P bad_command_lines.cmake
cmake_minimum_required(VERSION 3.24)  # the policies of today
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/text)
set(text "")
foreach(i RANGE 1 300)
  math(EXPR a "${i} % 7")
  string(APPEND text "%\nThe kiln number ${i} fires clay ${a} times.\n")
endforeach()
file(WRITE ${WORK}/text/corpus ${text})
include(${CMAKE_CURRENT_LIST_DIR}/run_program.cmake)
run(${BIN}/prepare_data --input ${WORK}/text --out ${WORK}/data --vocab 400)

# Token files whose sixth id (4000) is past the tokenizer's 400.
file(MAKE_DIRECTORY ${WORK}/wide_ids)
file(COPY ${WORK}/data/tokenizer.model ${WORK}/data/val.bin DESTINATION ${WORK}/wide_ids)
file(READ ${WORK}/data/train.bin train HEX)
string(SUBSTRING "${train}" 0 2068 head)  # the 1024-byte header and five uint16 ids, two hex digits a byte
string(SUBSTRING "${train}" 2072 -1 tail)
file(WRITE ${WORK}/hex "${head}a00f${tail}")  # 4000 = 0x0fa0, little-endian
file(READ ${WORK}/hex hex)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "\\\\x\\1" escaped "${hex}")
execute_process(COMMAND printf "${escaped}" OUTPUT_FILE ${WORK}/wide_ids/train.bin)

set(gpt2 "\"model_type\": \"gpt2\", \"vocab_size\": 400, \"n_positions\": 16, \"n_head\": 2, \"n_embd\": 16")
file(WRITE ${WORK}/bad_config/config.json "{${gpt2}, \"n_layer\": 1.5}")
file(WRITE ${WORK}/huge_config/config.json
     "{\"model_type\": \"gpt2\", \"vocab_size\": 400, \"n_positions\": 16, \"n_head\": 2, \"n_embd\": 65536, \"n_layer\": 2000000000}")
file(MAKE_DIRECTORY ${WORK}/empty_run)
file(MAKE_DIRECTORY ${WORK}/escaping_run/step-000001)
file(WRITE ${WORK}/escaping_run/latest "../../..\n")

# The table's lines as a list: brackets, which a CMake list would pair up across lines, stand aside meanwhile.
file(READ ${TABLE} table)
string(REPLACE "[" "<lb>" table "${table}")
string(REPLACE "]" "<rb>" table "${table}")
string(REPLACE "\n" ";" lines "${table}")
set(failures "")
set(n 0)
foreach(row IN LISTS lines)
  if(NOT row MATCHES "^[a-z_]+ *\\|")
    continue()
  endif()
  math(EXPR n "${n} + 1")
  string(REPLACE "<lb>" "[" row "${row}")
  string(REPLACE "<rb>" "]" row "${row}")
  string(REPLACE "{data}" "${WORK}/data" row "${row}")
  string(REPLACE "{work}" "${WORK}" row "${row}")
  string(REGEX MATCH "^([a-z_]+) *\\| *(.*[^ ]) *\\| *(.*)$" _ "${row}")
  set(program ${CMAKE_MATCH_1})
  set(expected "${CMAKE_MATCH_3}")
  separate_arguments(args UNIX_COMMAND "${CMAKE_MATCH_2}")
  execute_process(COMMAND ${BIN}/${program} ${args} WORKING_DIRECTORY ${WORK} TIMEOUT 60
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(STRIP "${err}" err)
  string(FIND "${err}" "${expected}" found)
  string(FIND "${err}" "\n" newline)
  if(NOT rc MATCHES "^[0-9]+$" OR rc EQUAL 0 OR found EQUAL -1 OR NOT newline EQUAL -1)
    string(APPEND failures "\n${program} ${CMAKE_MATCH_2}\n  exit: ${rc}\n  stderr: ${err}\n  expected: ${expected}\n")
  endif()
endforeach()
if(failures)
  message(FATAL_ERROR "bad command lines answered wrongly:${failures}")
endif()
message(STATUS "${n} bad command lines, each refused in one clear line")
