# End to end through the example programs, for GPT-2 and for Llama: prepare a
# small corpus, train 8 steps with a checkpoint at step 4, resume a copy of the
# run from step 4, and require the losses of steps 5..8 to be bit-identical.
#   cmake -DBIN=<examples dir> -DWORK=<scratch dir> -P lm_resume.cmake
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/text)
set(text "")
foreach(i RANGE 1 600)
  math(EXPR a "${i} % 7")
  math(EXPR b "${i} % 11")
  string(APPEND text "%\nThe kiln number ${i} fires clay ${a} times.\nIt cools ${b} hours, then sings.\n")
endforeach()
file(WRITE ${WORK}/text/corpus ${text})

include(${CMAKE_CURRENT_LIST_DIR}/run_program.cmake)

run(${BIN}/prepare_data --input ${WORK}/text --out ${WORK}/data --vocab 400)
# Compare everything but the timing.
function(losses file out_var)
  file(STRINGS ${file} lines)
  set(kept "")
  foreach(line IN LISTS lines)
    string(REGEX REPLACE "\"tokens_per_second\":[^,}]*,?" "" line "${line}")
    list(APPEND kept "${line}")
  endforeach()
  set(${out_var} "${kept}" PARENT_SCOPE)
endfunction()

foreach(model gpt2 llama)
  set(train ${BIN}/train --model ${model} --data ${WORK}/data --layers 2 --channels 32 --heads 2 --seq 16 --batch 4
      --steps 8 --warmup 2 --dropout 0.1 --eval-every 4 --eval-batches 2 --sample-every 0 --checkpoint-every 4 --keep 5)
  if(model STREQUAL llama)
    list(APPEND train --kv-heads 1 --recompute)
  endif()
  run(${train} --out ${WORK}/${model}/full)
  file(MAKE_DIRECTORY ${WORK}/${model}/resumed)
  file(COPY ${WORK}/${model}/full/step-000004 DESTINATION ${WORK}/${model}/resumed)
  file(WRITE ${WORK}/${model}/resumed/latest "step-000004\n")
  run(${train} --out ${WORK}/${model}/resumed --resume)

  losses(${WORK}/${model}/full/metrics.jsonl full)
  losses(${WORK}/${model}/resumed/metrics.jsonl resumed)
  list(SUBLIST full 4 4 full_tail)
  list(LENGTH resumed n)
  if(NOT n EQUAL 4 OR NOT "${full_tail}" STREQUAL "${resumed}")
    message(FATAL_ERROR "${model}: resumed run differs:\nuninterrupted: ${full_tail}\nresumed:       ${resumed}")
  endif()
  message(STATUS "${model}: resumed losses are bit-identical: ${resumed}")
endforeach()
