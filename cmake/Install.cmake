# cmake --install: libraries, public headers, the maskrcnn command, and a
# package config so that consumers can `find_package(maskrcnn)`.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

if(MASKRCNN_CORE_ONLY)
  set(MASKRCNN_INSTALLED_TARGETS maskrcnn_core maskrcnn_checkpoint)
else()
  set(MASKRCNN_INSTALLED_TARGETS maskrcnn maskrcnn_core maskrcnn_checkpoint maskrcnn_coco)
endif()
install(TARGETS ${MASKRCNN_INSTALLED_TARGETS}
  EXPORT maskrcnnTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/maskrcnn DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT maskrcnnTargets NAMESPACE maskrcnn::
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/maskrcnn)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/maskrcnnConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/maskrcnnConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/maskrcnn)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/maskrcnnConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/maskrcnnConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/maskrcnnConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/maskrcnn)
