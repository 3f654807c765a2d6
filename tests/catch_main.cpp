#include "catch_session.h"

int main(int argc, char** argv) { return kiln::test::run_catch_session(argc, argv); }
