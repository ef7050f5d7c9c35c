#include "kernattn/heads/multi_head.hpp"
