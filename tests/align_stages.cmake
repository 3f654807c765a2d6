# The alignment stages end to end: pretrain a tiny model on a small corpus,
# fine-tune it on generated arithmetic conversations and require the held-out
# loss over the answers to fall (and a run resumed from its middle checkpoint
# to log the uninterrupted run's losses exactly); then DPO on pairs that
# prefer the right sum to a wrong one must bring the held-out DPO loss below
# log 2, where a policy equal to its reference stands; and a reward model
# trained on pairs that prefer a sum to a refusal must rank most held-out
# pairs right.
#   cmake -DBIN=<examples dir> -DWORK=<scratch dir> -P align_stages.cmake
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/text)
set(text "")
set(tasks "")
set(pairs "")
set(refusals "")
foreach(i RANGE 1 400)
  math(EXPR a "${i} % 10")
  math(EXPR b "${i} % 7")
  math(EXPR c "${a} + ${b}")
  string(APPEND text "%\nThe kiln number ${i} fires clay ${a} times and ${b} more.\n")
  math(EXPR wrong "${c} + 1 + ${i} % 3")
  string(APPEND tasks "{\"messages\": [{\"role\": \"user\", \"content\": \"${a} plus ${b}?\"}, "
                      "{\"role\": \"assistant\", \"content\": \"${c}\"}]}\n")
  string(APPEND pairs "{\"prompt\": \"${a} plus ${b}?\", \"chosen\": \"${c}\", \"rejected\": \"${wrong}\"}\n")
  string(APPEND refusals "{\"prompt\": \"${a} plus ${b}?\", \"chosen\": \"it is ${c}.\", \"rejected\": \"no.\"}\n")
endforeach()
file(WRITE ${WORK}/text/corpus ${text})
file(WRITE ${WORK}/tasks.jsonl ${tasks})
file(WRITE ${WORK}/pairs.jsonl ${pairs})
file(WRITE ${WORK}/refusals.jsonl ${refusals})

include(${CMAKE_CURRENT_LIST_DIR}/run_program.cmake)

run(${BIN}/prepare_data --input ${WORK}/text --out ${WORK}/data --vocab 400 --sentinels 0)
run(${BIN}/train --model llama --data ${WORK}/data --out ${WORK}/pre --layers 2 --channels 32 --heads 2 --seq 32
    --batch 8 --steps 20 --eval-every 20 --sample-every 0 --checkpoint-every 20)
set(sft ${BIN}/sft --init-from ${WORK}/pre --tokenizer ${WORK}/data/tokenizer.model --data ${WORK}/tasks.jsonl
    --epochs 2 --batch 8 --lr 3e-3 --eval-every 10 --checkpoint-every 20 --log-every 10 --keep 10)
run(${sft} --out ${WORK}/sft)

function(metric_values file key out_var)
  file(STRINGS ${file} lines)
  set(found "")
  foreach(line IN LISTS lines)
    string(JSON value ERROR_VARIABLE missing GET "${line}" ${key})
    if(NOT missing)
      list(APPEND found ${value})
    endif()
  endforeach()
  set(${out_var} "${found}" PARENT_SCOPE)
endfunction()
metric_values(${WORK}/sft/metrics.jsonl val_loss val)
list(GET val 0 first)
list(GET val -1 last)
if(NOT last LESS first)
  message(FATAL_ERROR "sft: held-out loss did not fall: ${val}")
endif()
message(STATUS "sft: held-out loss over the answers ${first} -> ${last}")

file(MAKE_DIRECTORY ${WORK}/resumed)
file(COPY ${WORK}/sft/step-000020 DESTINATION ${WORK}/resumed)
file(WRITE ${WORK}/resumed/latest "step-000020\n")
run(${sft} --out ${WORK}/resumed --resume)
metric_values(${WORK}/sft/metrics.jsonl train_loss full)
metric_values(${WORK}/resumed/metrics.jsonl train_loss resumed)
list(LENGTH full n)
list(LENGTH resumed m)
math(EXPR skip "${n} - ${m}")
list(SUBLIST full ${skip} ${m} tail)
if(NOT skip EQUAL 20 OR NOT "${tail}" STREQUAL "${resumed}")
  message(FATAL_ERROR "sft: the resumed run differs:\nuninterrupted: ${tail}\nresumed:       ${resumed}")
endif()
message(STATUS "sft: resumed losses are bit-identical")

run(${BIN}/dpo --init-from ${WORK}/sft --tokenizer ${WORK}/data/tokenizer.model --data ${WORK}/pairs.jsonl
    --out ${WORK}/dpo --epochs 2 --batch 8 --lr 1e-3 --beta 0.5 --eval-every 10 --log-every 10)
metric_values(${WORK}/dpo/metrics.jsonl val_loss dpo_val)
list(GET dpo_val -1 dpo_last)
if(NOT dpo_last LESS 0.6)
  message(FATAL_ERROR "dpo: the held-out loss stayed near log 2: ${dpo_val}")
endif()
metric_values(${WORK}/dpo/metrics.jsonl val_accuracy dpo_accuracy)
message(STATUS "dpo: held-out loss ${dpo_val}, accuracy ${dpo_accuracy}")

run(${BIN}/reward --init-from ${WORK}/sft --tokenizer ${WORK}/data/tokenizer.model --data ${WORK}/refusals.jsonl
    --out ${WORK}/reward --epochs 1 --batch 8 --lr 1e-3 --eval-every 10 --log-every 10)
metric_values(${WORK}/reward/metrics.jsonl val_accuracy rm_accuracy)
list(GET rm_accuracy -1 rm_last)
if(rm_last LESS 0.8)
  message(FATAL_ERROR "reward: held-out accuracy stayed low: ${rm_accuracy}")
endif()
message(STATUS "reward: held-out accuracy ${rm_accuracy}")
