# The classification fine-tuning example end to end: two files of texts that
# differ in their words (one class each) fine-tune a small BERT from random
# weights to tell them apart on held-out texts, and the saved model holds
# BertForSequenceClassification's tensors, with the held-out logits beside
# them (make_golden.py --check-kiln loads it with transformers and compares).
#   cmake -DBIN=<examples dir> -DWORK=<scratch dir> -P bert_classify.cmake
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/text)
set(kilns "")
set(rivers "")
foreach(i RANGE 1 80)
  math(EXPR a "${i} % 9")
  math(EXPR b "${i} % 7")
  string(APPEND kilns "%\nKiln ${i} fires clay pots ${a} times at dawn.\n")
  string(APPEND rivers "%\nRiver ${i} carries sand ${b} miles to the sea.\n")
endforeach()
file(WRITE ${WORK}/text/kilns ${kilns})
file(WRITE ${WORK}/text/rivers ${rivers})

include(${CMAKE_CURRENT_LIST_DIR}/run_program.cmake)

run(${BIN}/prepare_data --input ${WORK}/text --out ${WORK}/data --vocab 400)
run(${BIN}/classify --scratch --layers 1 --channels 32 --heads 2 --tokenizer ${WORK}/data/tokenizer.model
    --files ${WORK}/text/kilns ${WORK}/text/rivers --seq 24 --batch 8 --epochs 4 --lr 1e-3 --held-out 0.25
    --log-every 1000 --out ${WORK}/out --predictions ${WORK}/out/model/kiln_logits.safetensors)

file(STRINGS ${WORK}/out/metrics.jsonl lines)
list(GET lines -1 last)
string(JSON accuracy GET "${last}" held_out_accuracy)
string(JSON majority GET "${last}" majority)
if(accuracy LESS 0.9)
  message(FATAL_ERROR "held-out accuracy ${accuracy} (majority class ${majority}): the classifier did not learn")
endif()
message(STATUS "held-out accuracy ${accuracy} (majority class ${majority})")
foreach(f model.safetensors config.json kiln_logits.safetensors)
  if(NOT EXISTS ${WORK}/out/model/${f})
    message(FATAL_ERROR "classify wrote no ${f}")
  endif()
endforeach()
file(READ ${WORK}/out/model/config.json config)
string(JSON architecture GET "${config}" architectures 0)
if(NOT architecture STREQUAL "BertForSequenceClassification")
  message(FATAL_ERROR "config.json names ${architecture}")
endif()
