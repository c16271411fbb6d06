#include "fp8c.h"
int main(void){return 0;}
