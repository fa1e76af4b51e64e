#pragma once
#include "inc/a.h"
